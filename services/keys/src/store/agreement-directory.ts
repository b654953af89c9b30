import type { KV, KvEntry } from "@nats-io/kv";
import { UnibusError } from "@unibus/contracts";
import type { Logger } from "pino";
import { WatchedKv, corruptRecord } from "@unibus/kit";
import { checkAgreementKeyRecord, readAgreementKeyRecord } from "./records.js";
import type { AgreementKeyRecord } from "./records.js";

/** The watched value, checked against its stored-data schema; a failure is logged and kept as the error. */
function checked(e: KvEntry, logger: Logger): AgreementKeyRecord | UnibusError {
  try {
    return checkAgreementKeyRecord(e.json<unknown>(), e.key);
  } catch (err) {
    const failure = err instanceof UnibusError ? err : corruptRecord("keys", e.key, err);
    logger.error({ op: "agreement_keys.watch", key: e.key, err: failure.cause instanceof Error ? failure.cause.message : failure.message }, "stored agreement key fails its schema");
    return failure;
  }
}

function known(v: AgreementKeyRecord | UnibusError | undefined): AgreementKeyRecord | null {
  if (v instanceof UnibusError) throw v;
  return v ?? null;
}

/**
 * The `agreement_keys` bucket kept in memory by a KV watcher, so listing a
 * 1,000-member room's keys costs no per-member round trip (P4). Staleness
 * can only cost availability, never secrecy: clients verify every binding's
 * self-signature, and a member whose key is missing just gets no share.
 * Still, a lookup first waits until the watcher has seen the bucket's last
 * revision (one stream-info request), and reads the bucket directly if the
 * watcher is behind or stopped; one stalled for longer is replaced
 * (the kit's {@link WatchedKv}).
 */
export class AgreementKeyDirectory {
  readonly #kv: KV;
  // A record that failed its schema is kept as its error: a lookup of it fails
  // as a direct read would (500 corrupt_record), never passes it on.
  readonly #keys = new Map<string, AgreementKeyRecord | UnibusError>();
  readonly #watch: WatchedKv;

  private constructor(kv: KV, logger: Logger) {
    this.#kv = kv;
    this.#watch = new WatchedKv(kv, {
      headersOnly: false,
      op: "agreement_keys.watch",
      fallback: "reading the bucket directly",
      logger,
      reset: () => this.#keys.clear(),
      apply: (e) => {
        if (e.operation === "PUT") this.#keys.set(e.key, checked(e, logger));
        else this.#keys.delete(e.key);
      },
    });
  }

  /** Starts watching `kv`; resolves once the watch is created. */
  static async watch(kv: KV, logger: Logger): Promise<AgreementKeyDirectory> {
    const dir = new AgreementKeyDirectory(kv, logger);
    await dir.#watch.start();
    return dir;
  }

  /** The records of `principals` (null where none is registered), in order. */
  async lookup(principals: readonly string[]): Promise<(AgreementKeyRecord | null)[]> {
    return (await this.reader())(principals);
  }

  /**
   * Starts the catch-up check now (so its round trip can overlap another
   * read, e.g. the member listing) and resolves to the lookup function. The
   * catch-up target is the bucket's last revision when this is called, so a
   * key registered before the call is always seen.
   */
  async reader(): Promise<(principals: readonly string[]) => Promise<(AgreementKeyRecord | null)[]>> {
    if (await this.#watch.caughtUp()) return async (principals) => principals.map((p) => known(this.#keys.get(p)));
    return (principals) => Promise.all(principals.map((p) => readAgreementKeyRecord(this.#kv, p)));
  }

  /** Records a write this service just made, so its own caller sees it at once. */
  remember(record: AgreementKeyRecord): void {
    this.#keys.set(record.principal, record);
  }

  stop(): void {
    this.#watch.stop();
  }
}
