import { setTimeout as sleep } from "node:timers/promises";
import type { KV, KvEntry, KvWatchOptions } from "@nats-io/kv";

/** A bucket under the test's control: see {@link controllableKv}. */
export interface ControllableKv {
  /** The bucket as the code under test sees it. */
  readonly kv: KV;
  /** Holds every watch back from its next entry (a stalled watcher) until {@link release}. */
  stall(): void;
  release(): void;
  /** Replaces the bucket's stream info with `answer` (undefined: the real one again). */
  info(answer: (() => Promise<unknown>) | undefined): void;
}

/**
 * A real bucket whose watches can be held back (a stalled watcher) or
 * deliver each entry `lagMs` late (an ordered consumer on a replica that
 * lags the leader, as seen in clusters), and whose stream info can be
 * replaced. Its `get` always fails: code that must decide from a watched
 * copy is caught reading past it. The lag is the fault being injected, not
 * a wait for an event.
 */
export function controllableKv(kv: KV, lagMs = 0): ControllableKv {
  let held: Promise<void> | undefined;
  let release: () => void = () => undefined;
  let info: (() => Promise<unknown>) | undefined;
  const proxy = {
    get: () => Promise.reject(new Error("a record read past the copy")),
    status: () => (info === undefined ? kv.status() : info()),
    async watch(opts?: KvWatchOptions) {
      const iter = await kv.watch(opts);
      return {
        stop: () => iter.stop(),
        async *[Symbol.asyncIterator](): AsyncGenerator<KvEntry> {
          for await (const e of iter) {
            if (lagMs > 0) await sleep(lagMs);
            while (held !== undefined) await held;
            yield e;
          }
        },
      };
    },
  } as unknown as KV;
  return {
    kv: proxy,
    stall() {
      held ??= new Promise((r) => (release = r));
    },
    release() {
      held = undefined;
      release();
    },
    info(answer) {
      info = answer;
    },
  };
}
