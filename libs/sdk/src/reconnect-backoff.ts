/** Tuning of {@link ReconnectBackoff}. */
export interface ReconnectBackoffOptions {
  /** Wait before a reconnect when the last attempt was not refused (a kick, a network blip). */
  readonly baseMs: number;
  /** Random extra on top of {@link baseMs}, spreading a mass kick's reconnects. */
  readonly jitterMs: number;
  /** Wait after the first refusal; doubles with each refusal in a row. */
  readonly refusedInitialMs: number;
  /** Ceiling of the wait after refusals. */
  readonly refusedMaxMs: number;
}

/** Defaults of {@link ReconnectBackoffOptions}. */
export const ReconnectBackoffDefaults = {
  baseMs: 100,
  jitterMs: 250,
  refusedInitialMs: 250,
  refusedMaxMs: 15_000,
} as const satisfies ReconnectBackoffOptions;

/**
 * The SDK's reconnect delay (nats.js `reconnectDelayHandler`). A kicked
 * client comes back within a few hundred ms to pick up its new permissions;
 * a client the bus keeps refusing (revoked, leaked key, directory down)
 * waits exponentially longer with full jitter, up to 15 s, so thousands of
 * them do not hammer the auth callout in lockstep. Refusals are never fatal:
 * a recovered directory or a re-added user still gets back in.
 *
 * nats.js asks for a delay on every pass of its dial loop, so
 * {@link delayMs} depends only on the refusals counted so far.
 */
export class ReconnectBackoff {
  readonly #o: ReconnectBackoffOptions;
  readonly #random: () => number;
  #refusals = 0;

  constructor(options: Partial<ReconnectBackoffOptions> = {}, random: () => number = Math.random) {
    this.#o = { ...ReconnectBackoffDefaults, ...options };
    this.#random = random;
  }

  /** The server refused a login (authorization error). */
  refused(): void {
    this.#refusals++;
  }

  /** A connection was established: back to fast reconnects. */
  connected(): void {
    this.#refusals = 0;
  }

  /** Refusals in a row so far. */
  get refusals(): number {
    return this.#refusals;
  }

  /** How long to wait before the next connect attempt. */
  delayMs(): number {
    if (this.#refusals === 0) return this.#o.baseMs + Math.floor(this.#random() * (this.#o.jitterMs + 1));
    const ceiling = Math.min(this.#o.refusedMaxMs, this.#o.refusedInitialMs * 2 ** Math.min(this.#refusals - 1, 30));
    // Half fixed, half random ("equal jitter"): never a near-zero wait after a refusal.
    return Math.floor(ceiling / 2 + this.#random() * (ceiling / 2));
  }
}
