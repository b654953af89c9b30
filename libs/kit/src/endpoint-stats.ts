import type { Service } from "@nats-io/services";

/** The mutable stats object @nats-io/services 3.0.0-25 keeps per endpoint. */
interface MicroEndpointStats {
  num_requests: number;
  num_errors: number;
  last_error?: string;
  processing_time: number;
  average_processing_time: number;
}

/**
 * Keeps an endpoint's micro stats true for async handlers.
 *
 * @nats-io/services 3.0.0-25 does not await handlers, so it times only their
 * synchronous start, counts no error reply (nats-notes "Micro services"), and
 * omits `last_error`, which the io.nats.micro.v1.stats_response schema
 * requires. The kit owns the full request, so it writes the real numbers into
 * the library's stats object. If a later library version moves that object,
 * only the library's own numbers remain (checked by the micro protocol test).
 */
export class EndpointStats {
  readonly #stats: MicroEndpointStats | undefined;
  #totalNanos = 0;
  readonly #errorsByReason: Record<string, number> = {};

  constructor(service: Service, endpointName: string) {
    const handlers = (service as unknown as { handlers?: Array<{ name?: string; stats?: MicroEndpointStats }> }).handlers;
    this.#stats = handlers?.find((h) => h.name === endpointName)?.stats;
    if (this.#stats !== undefined) this.#stats.last_error ??= "";
  }

  /** Records one finished request: its full duration and, if it failed, its code and reason. */
  record(elapsedNanos: number, failure?: { code: number; reason: string }): void {
    this.#totalNanos += elapsedNanos;
    if (failure !== undefined) this.#errorsByReason[failure.reason] = (this.#errorsByReason[failure.reason] ?? 0) + 1;
    const s = this.#stats;
    if (s === undefined) return;
    s.processing_time = Math.round(this.#totalNanos);
    s.average_processing_time = s.num_requests > 0 ? Math.round(this.#totalNanos / s.num_requests) : 0;
    if (failure !== undefined) {
      s.num_errors++;
      s.last_error = `${failure.code} ${failure.reason}`;
    }
    s.last_error ??= "";
  }

  /** Extra stats for `$SRV.STATS` `data`: error replies counted by reason. */
  data(): { errors_by_reason: Record<string, number> } {
    return { errors_by_reason: { ...this.#errorsByReason } };
  }
}
