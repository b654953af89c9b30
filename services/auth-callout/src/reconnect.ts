/**
 * How the callout's own connection comes back after a server restart. Every
 * login waits on the callout, so its way back is on the critical path of a
 * whole reconnect storm: with the nats.js default (2 s between attempts)
 * clients arriving before it are refused and back off for seconds (bench
 * P1s: 1,000–1,500 refusals per 1,000-client storm, against 0–90 at 100 ms).
 * It is one connection per replica, so fast retries cost the server nothing.
 */
export const CalloutReconnect = {
  timeWaitMs: 100,
  jitterMs: 100,
} as const;
