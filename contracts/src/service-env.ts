/**
 * Environment variables a launcher (`unibus up`, a container's entry point)
 * sets for a service: named here because both sides read them and neither
 * may import the other.
 */

/** Environment variables healthz reads (in its main only). */
export const HealthzEnv = {
  /** `host:port` of the HTTP health server; default loopback with a free port. */
  listen: "UNIBUS_HEALTHZ_LISTEN",
  /** Comma-separated nats-server monitoring URLs (`http://127.0.0.1:8222`). */
  monitorUrls: "UNIBUS_NATS_MONITOR_URLS",
  /** The JetStream cipher the deployment configured (`chachapoly`, `aes`), or `none`. */
  cipher: "UNIBUS_JS_CIPHER",
  /** The bus's NATS WebSocket URL: when set, the admin panel is served at `/panel/`, offering it as the bus. */
  wsUrl: "UNIBUS_WS_URL",
} as const;
