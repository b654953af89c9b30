/** Refusals held back at once by default: each is one timer and one signed reply of about 1 KB. */
export const TARPIT_MAX_HELD = 10_000;

/**
 * Holds refusals back (a timer each, no CPU) so that a client retrying in a
 * tight loop gets one answer per delay instead of one per round trip: each
 * attempt also costs nats-server a signed, sealed request and a verified
 * response, so only a lower attempt rate protects it. Bounded: past `max`
 * held answers (an address flood), answers go out at once, which costs a
 * send but no memory.
 */
export class Tarpit {
  readonly #max: number;
  readonly #pending = new Map<NodeJS.Timeout, () => void>();

  constructor(max: number = TARPIT_MAX_HELD) {
    this.#max = max;
  }

  /** Calls `send` after `delayMs`, or now when there is no delay or the bound is reached. True if held. */
  hold(delayMs: number, send: () => void): boolean {
    if (delayMs <= 0 || this.#pending.size >= this.#max) {
      send();
      return false;
    }
    const timer = setTimeout(() => {
      this.#pending.delete(timer);
      send();
    }, delayMs);
    this.#pending.set(timer, send);
    return true;
  }

  /** Sends every held answer now (the service is stopping: the server must not wait for them). */
  flush(): void {
    const held = [...this.#pending];
    this.#pending.clear();
    for (const [timer, send] of held) {
      clearTimeout(timer);
      send();
    }
  }

  /** Answers held right now. */
  get held(): number {
    return this.#pending.size;
  }
}
