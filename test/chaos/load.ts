// The load a chaos scenario runs while it breaks the cluster: acknowledged
// messages on an R3 stream and acknowledged control-plane mutations, each
// attempt recorded with when it was sent and answered, so a scenario can
// compare what was acknowledged with what a healthy node reads back.
import { setTimeout as pace } from "node:timers/promises";
import type { JetStreamClient } from "@nats-io/jetstream";
import { SigningKey } from "@unibus/crypto";
import type { UnibusClient } from "@unibus/sdk";

/** One attempt of a load loop. */
export interface Attempt<K> {
  readonly key: K;
  readonly sentAt: number;
  answeredAt: number;
  acked: boolean;
  /** Why it was not acknowledged. */
  error?: string;
}

/** A load loop: one attempt at a time until stopped. */
export interface LoadLoop<K> {
  readonly attempts: readonly Attempt<K>[];
  /** Keys whose attempt was acknowledged. */
  acked(): K[];
  /** Keys whose attempt failed or timed out: absent or present afterwards, both are fine. */
  unacked(): K[];
  /** The first acknowledgment answered after `t` (performance.now()), or undefined. */
  firstAckAfter(t: number): number | undefined;
  /** Attempts sent at or after `from` and answered by `to`. */
  within(from: number, to: number): Attempt<K>[];
  /** Acknowledged attempts answered after `t`. */
  ackedSince(t: number): number;
  /** The last refusal's reason, for a failure message. */
  lastError(): string | undefined;
  /** Stops after the attempt in flight and waits for it. */
  stop(): Promise<void>;
}

function loop<K>(next: (i: number) => K, attempt: (key: K) => Promise<void>, gapMs: number): LoadLoop<K> {
  const attempts: Attempt<K>[] = [];
  let stopped = false;
  const running = (async () => {
    for (let i = 0; !stopped; i++) {
      const key = next(i);
      const a: Attempt<K> = { key, sentAt: performance.now(), answeredAt: 0, acked: false };
      attempts.push(a);
      try {
        await attempt(key);
        a.acked = true;
      } catch (err) {
        // Refused or timed out: not acknowledged, so the read-back may or may not hold it.
        a.error = (err as Error).message;
      }
      a.answeredAt = performance.now();
      // Load shaping, not synchronisation: a modest, steady rate on a shared 2-core machine.
      if (!stopped) await pace(gapMs);
    }
  })();
  return {
    attempts,
    acked: () => attempts.filter((a) => a.acked).map((a) => a.key),
    unacked: () => attempts.filter((a) => !a.acked && a.answeredAt > 0).map((a) => a.key),
    firstAckAfter: (t) => attempts.find((a) => a.acked && a.answeredAt >= t)?.answeredAt,
    within: (from, to) => attempts.filter((a) => a.sentAt >= from && a.answeredAt > 0 && a.answeredAt <= to),
    ackedSince: (t) => attempts.filter((a) => a.acked && a.answeredAt >= t).length,
    lastError: () => attempts.findLast((a) => a.error !== undefined)?.error,
    async stop() {
      stopped = true;
      await running;
    },
  };
}

/** The stream acknowledged messages go to: R3, file storage, fsynced before the ack. */
export const ChaosStream = { name: "CHAOS_MSGS", subjects: "chaos.msgs.>" } as const;

/** Publishes `{scenario, n}` to the chaos stream, one at a time; acked = PubAck received. */
export function messageLoad(js: JetStreamClient, scenario: string): LoadLoop<number> {
  return loop(
    (i) => i,
    async (n) => {
      await js.publish(`chaos.msgs.${scenario}`, JSON.stringify({ scenario, n }), { msgID: `${scenario}-${n}`, timeout: 2_000 });
    },
    20,
  );
}

/** Adds a fresh user per attempt through `admin`; acked = the membership reply received. */
export function mutationLoad(admin: UnibusClient, scenario: string): LoadLoop<string> {
  return loop(
    () => SigningKey.generate().principal,
    async (principal) => {
      await admin.users.add(principal, `chaos-${scenario}`, "member");
    },
    50,
  );
}
