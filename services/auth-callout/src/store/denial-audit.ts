import { jetstream } from "@nats-io/jetstream";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { AuditDenialRecord } from "@unibus/contracts";
import { auditDenialSubject } from "@unibus/contracts";
import { calloutMetrics } from "../metrics.js";

/** Where refused logins are recorded. `record` never blocks and never throws: the login is refused either way. */
export interface DenialAudit {
  record(record: AuditDenialRecord): void;
  /** Resolves when every record handed over so far is stored or dropped. */
  flush(): Promise<void>;
}

/** Options of {@link StreamDenialAudit}. */
export interface StreamDenialAuditOptions {
  /** Records waiting for the stream's acknowledgement at most; beyond that new ones are dropped and counted. */
  readonly maxInFlight?: number;
  /** How long one record may wait for its acknowledgement. */
  readonly timeoutMs?: number;
  /** Told about failed writes, at most once per {@link StreamDenialAuditOptions.warnEveryMs}. */
  readonly warn?: (obj: object, msg: string) => void;
  readonly warnEveryMs?: number;
}

/**
 * Publishes each record to the AUDIT_DENIALS stream (created by the
 * membership service) and waits for its acknowledgement off the login path.
 * A bounded number wait at once: when the stream is slow or gone, records are
 * dropped and counted (`unibus_callout_audit_dropped_total`) instead of
 * holding memory or delaying the callout's answer (threat: a denial storm
 * turned into a callout outage through its own audit trail).
 */
export class StreamDenialAudit implements DenialAudit {
  readonly #js: JetStreamClient;
  readonly #maxInFlight: number;
  readonly #timeoutMs: number;
  readonly #warn: ((obj: object, msg: string) => void) | undefined;
  readonly #warnEveryMs: number;
  readonly #pending = new Set<Promise<void>>();
  #lastWarn = 0;

  constructor(nc: NatsConnection, options: StreamDenialAuditOptions = {}) {
    this.#js = jetstream(nc);
    this.#maxInFlight = options.maxInFlight ?? 256;
    this.#timeoutMs = options.timeoutMs ?? 2_000;
    this.#warn = options.warn;
    this.#warnEveryMs = options.warnEveryMs ?? 10_000;
  }

  record(record: AuditDenialRecord): void {
    if (this.#pending.size >= this.#maxInFlight) {
      calloutMetrics.auditDropped.inc({ cause: "queue_full" });
      return;
    }
    const p = this.#js
      .publish(auditDenialSubject(record.principal), JSON.stringify(record), { timeout: this.#timeoutMs })
      .then(
        () => undefined,
        (err: unknown) => {
          calloutMetrics.auditDropped.inc({ cause: "write_failed" });
          const now = Date.now();
          if (this.#warn !== undefined && now - this.#lastWarn >= this.#warnEveryMs) {
            this.#lastWarn = now;
            this.#warn({ op: "audit", err: err instanceof Error ? err.message : String(err) }, "denial audit record not stored");
          }
        },
      )
      .finally(() => this.#pending.delete(p));
    this.#pending.add(p);
  }

  async flush(): Promise<void> {
    await Promise.all([...this.#pending]);
  }

  /** Records waiting for an acknowledgement (for tests and stats). */
  get inFlight(): number {
    return this.#pending.size;
  }
}
