import type { KV } from "@nats-io/kv";
import type { Logger } from "pino";
import { readJson } from "./records.js";
import type { AgreementKeyRecord } from "./records.js";

/** How long a lookup waits for the watcher to catch up with the bucket before reading the bucket directly. */
const CATCH_UP_MS = 500;

/**
 * The `agreement_keys` bucket kept in memory by a KV watcher, so listing a
 * 1,000-member room's keys costs no per-member round trip (P4). Staleness
 * can only cost availability, never secrecy: clients verify every binding's
 * self-signature, and a member whose key is missing just gets no share.
 * Still, a lookup first waits until the watcher has seen the bucket's last
 * revision (one stream-info request), and reads the bucket directly if the
 * watcher is behind or stopped.
 */
export class AgreementKeyDirectory {
  readonly #kv: KV;
  readonly #keys = new Map<string, AgreementKeyRecord>();
  #seen = 0;
  #healthy = false;
  #stop: (() => void) | undefined;

  private constructor(kv: KV) {
    this.#kv = kv;
  }

  /** Starts watching `kv`; resolves once the initial values are loaded. */
  static async watch(kv: KV, logger: Logger): Promise<AgreementKeyDirectory> {
    const dir = new AgreementKeyDirectory(kv);
    const iter = await kv.watch();
    dir.#stop = () => iter.stop();
    dir.#healthy = true;
    void (async () => {
      try {
        for await (const e of iter) {
          if (e.operation === "PUT") dir.#keys.set(e.key, e.json<AgreementKeyRecord>());
          else dir.#keys.delete(e.key);
          dir.#seen = Math.max(dir.#seen, e.revision);
        }
      } catch (err) {
        logger.error({ op: "agreement_keys.watch", err: (err as Error).message }, "agreement-key watcher failed; reading the bucket directly");
      } finally {
        dir.#healthy = false;
      }
    })();
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
    if (await this.#caughtUp()) return async (principals) => principals.map((p) => this.#keys.get(p) ?? null);
    return (principals) => Promise.all(principals.map((p) => readJson<AgreementKeyRecord>(this.#kv, p)));
  }

  /** Records a write this service just made, so its own caller sees it at once. */
  remember(record: AgreementKeyRecord): void {
    this.#keys.set(record.principal, record);
  }

  stop(): void {
    this.#stop?.();
    this.#healthy = false;
  }

  async #caughtUp(): Promise<boolean> {
    if (!this.#healthy) return false;
    const last = (await this.#kv.status()).streamInfo.state.last_seq;
    const deadline = Date.now() + CATCH_UP_MS;
    while (this.#healthy && this.#seen < last) {
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 5));
    }
    return this.#healthy;
  }
}
