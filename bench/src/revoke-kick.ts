/**
 * P5: revoke → disconnect. Time from the admin's `users.revoke` request being
 * sent to the revoked user's live connection reporting its disconnect, on a
 * real server with the auth callout, the membership service (which finds the
 * connection by connz and kicks it) and the callout service.
 *
 * raw, same run: a bare `$SYS.REQ.SERVER.<id>.KICK {"cid": N}` of a
 * config-level nkey connection (no callout on its path), timed the same way, so the ratio shows what unibus adds
 * (the revoke request, its checks and KV writes, the connz lookup).
 *
 *   npx tsx bench/src/revoke-kick.ts [--samples 40]
 *
 * The services run in the bench process: each sample is one request at a
 * time, so there is no load for them to steal CPU from, and the latency then
 * has no process hop the production setup would not have either.
 */
import { fileURLToPath } from "node:url";
import type { NatsConnection } from "@nats-io/transport-node";
import { SystemSubject } from "@unibus/membership";
import { startTestBus } from "@unibus/testbus";
import { percentile, printCase } from "./report.js";
import type { BenchCase } from "./report.js";


/** A sample that takes longer than this is a failure, not a slow sample. */
const SAMPLE_TIMEOUT_MS = 5_000;

/**
 * Resolves when `nc` first reports a disconnect or closes. Subscribes to
 * status before the caller starts the kick so the event cannot be missed.
 */
function disconnected(nc: NatsConnection): { done: Promise<number>; stop: () => void } {
  const status = nc.status();
  let timer: NodeJS.Timeout | undefined;
  const stop = (): void => {
    clearTimeout(timer);
    (status as unknown as { stop(): void }).stop();
  };
  const done = new Promise<number>((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no disconnect within ${SAMPLE_TIMEOUT_MS} ms`)), SAMPLE_TIMEOUT_MS);
    // Either signal counts: the SDK reconnects (disconnect status), a plain
    // client with reconnect off may go straight to closed.
    void nc.closed().then(() => resolve(performance.now()));
    void (async () => {
      for await (const s of status) {
        if (s.type === "disconnect") {
          resolve(performance.now());
          return;
        }
      }
    })();
  }).finally(stop);
  return { done, stop };
}

/** Options of {@link runRevokeKick}. */
export interface RevokeKickOptions {
  /** Revokes to time (and as many raw kicks). */
  samples: number;
}

/** P5: p50 and p99 of revoke → disconnect against a raw system-account kick, same run. */
export async function runRevokeKick(opts: RevokeKickOptions): Promise<BenchCase[]> {
  // The production ACLs and services (as `unibus up` configures them), with
  // the production kicker, follow-up sweep included: that sweep runs 2.5 s
  // after each revoke, off the timed path, and is load production has too.
  const bus = await startTestBus();
  try {
    const sys = bus.system;
    const unibusSample = async (tag: string): Promise<number> => {
      const { principal, client: victim } = await bus.addMember(`p5-${tag}`);
      try {
        const gone = disconnected(victim.nc);
        const t0 = performance.now();
        const reply = await bus.admin.users.revoke(principal);
        if (reply.kick.kicked !== 1) {
          gone.stop();
          throw new Error(`revoke kicked ${JSON.stringify(reply.kick)}`);
        }
        return (await gone.done) - t0;
      } finally {
        // The SDK would keep retrying through the callout (denied each time).
        await victim.close();
      }
    };
    const rawSample = async (): Promise<number> => {
      // A config-level user (a service's) skips the callout: nothing unibus is on its path.
      const victim = await bus.serviceConnection("healthz");
      try {
        const { server_id: serverId, client_id: cid } = victim.info ?? {};
        if (serverId === undefined || cid === undefined) throw new Error("no server info on the raw victim");
        const gone = disconnected(victim);
        const t0 = performance.now();
        const reply = (await sys.request(SystemSubject.kick(serverId), JSON.stringify({ cid }), { timeout: SAMPLE_TIMEOUT_MS })).json<{ error?: unknown }>();
        if (reply.error !== undefined) {
          gone.stop();
          throw new Error(`raw kick refused: ${JSON.stringify(reply.error)}`);
        }
        return (await gone.done) - t0;
      } finally {
        await victim.close().catch(() => undefined);
      }
    };

    // Warm-up: JIT, KV buckets, key caches on both paths.
    for (let i = 0; i < 3; i++) {
      await unibusSample(`warm${i}`);
      await rawSample();
    }
    // Interleaved so both sides see the same machine load (the host is shared).
    const unibus: number[] = [];
    const raw: number[] = [];
    for (let i = 0; i < opts.samples; i++) {
      unibus.push(await unibusSample(String(i)));
      raw.push(await rawSample());
    }
    const name = `P5 revoke → disconnect (${opts.samples} samples)`;
    return [
      { name: `${name}, p50`, unit: "ms", unibus: percentile(unibus, 50), raw: percentile(raw, 50), lowerIsBetter: true },
      { name: `${name}, p99`, unit: "ms", unibus: percentile(unibus, 99), raw: percentile(raw, 99), lowerIsBetter: true, goal: "p99 < 1000 ms" },
    ];
  } finally {
    await bus.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf("--samples");
  for (const c of await runRevokeKick({ samples: i > 0 ? Number(process.argv[i + 1]) : 40 })) printCase(c);
}
