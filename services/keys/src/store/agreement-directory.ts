import type { KV } from "@nats-io/kv";
import type { Logger } from "pino";
import { WatchedKv } from "@unibus/kit";
import { readJson } from "./records.js";
import type { AgreementKeyRecord } from "./records.js";

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
  readonly #keys = new Map<string, AgreementKeyRecord>();
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
        if (e.operation === "PUT") this.#keys.set(e.key, e.json<AgreementKeyRecord>());
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
    if (await this.#watch.caughtUp()) return async (principals) => principals.map((p) => this.#keys.get(p) ?? null);
    return (principals) => Promise.all(principals.map((p) => readJson<AgreementKeyRecord>(this.#kv, p)));
  }

  /** Records a write this service just made, so its own caller sees it at once. */
  remember(record: AgreementKeyRecord): void {
    this.#keys.set(record.principal, record);
  }

  stop(): void {
    this.#watch.stop();
  }
}
