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
 *   npx tsx bench/src/revoke-kick.ts --cluster [--samples 20]   (3 nodes, TLS routes)
 *
 * The services run in the bench process: each sample is one request at a
 * time, so there is no load for them to steal CPU from, and the latency then
 * has no process hop the production setup would not have either.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import type { NatsConnection } from "@nats-io/transport-node";
import type { UnibusClient } from "@unibus/sdk";
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

/**
 * Three warm-up rounds (JIT, KV buckets, key caches on both paths), then
 * `samples` rounds of one unibus and one raw sample, interleaved so both
 * sides see the same machine load (the host is shared); their p50 and p99.
 */
async function pairedCases(name: string, p99Goal: string, samples: number, unibusSample: (tag: string) => Promise<number>, rawSample: () => Promise<number>): Promise<BenchCase[]> {
  for (let i = 0; i < 3; i++) {
    await unibusSample(`warm${i}`);
    await rawSample();
  }
  const unibus: number[] = [];
  const raw: number[] = [];
  for (let i = 0; i < samples; i++) {
    unibus.push(await unibusSample(String(i)));
    raw.push(await rawSample());
  }
  return [
    { name: `${name}, p50`, unit: "ms", unibus: percentile(unibus, 50), raw: percentile(raw, 50), lowerIsBetter: true },
    { name: `${name}, p99`, unit: "ms", unibus: percentile(unibus, 99), raw: percentile(raw, 99), lowerIsBetter: true, goal: p99Goal },
  ];
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

    return await pairedCases(`P5 revoke → disconnect (${opts.samples} samples)`, "p99 < 1000 ms", opts.samples, unibusSample, rawSample);
  } finally {
    await bus.stop();
  }
}

/** How long after a revoke a reconnect of the revoked principal's clients counts as a re-admission. */
const READMIT_WATCH_MS = 5_000;

/** Counts `reconnect` events of `client` (each one is a login the bus admitted) until `stop()`. */
function admissions(client: UnibusClient): { count: () => number; refused: () => number; stop: () => void } {
  const status = client.nc.status();
  let n = 0;
  let refused = 0;
  void (async () => {
    for await (const s of status) {
      if (s.type === "reconnect") n++;
      // The server's refusal of a login: proof the watch saw real attempts.
      else if (s.type === "error" && /authorization/i.test(String(s.error))) refused++;
    }
  })();
  return { count: () => n, refused: () => refused, stop: () => (status as unknown as { stop(): void }).stop() };
}

/** Result of {@link runRevokeKickCluster}: the timed cases and the re-admission count. */
export interface RevokeKickClusterResult {
  cases: BenchCase[];
  /** Logins of a revoked principal the bus admitted within 5 s after its revoke (must be 0). */
  readmissions: number;
  /** Logins of a revoked principal the bus refused in those windows (the attempts that were watched). */
  refusedLogins: number;
}

/**
 * P5 in a cluster: the victim holds one live connection on each of the 3
 * nodes (TLS routes); a sample is the time from `users.revoke` sent to the
 * last of them reporting its disconnect. The victim's SDK clients keep
 * reconnecting (as a real client would) for 5 s after the revoke, and every
 * reconnect the bus admits is counted as a re-admission (samples are ~5 s
 * apart for it; default 20). raw, same run:
 * bare `$SYS KICK`s of a plain connection on each node, sent together.
 */
export async function runRevokeKickCluster(opts: RevokeKickOptions): Promise<RevokeKickClusterResult> {
  const bus = await startTestBus({ nodes: 3, cluster: { routeTls: true } });
  const nodes = bus.cluster!.servers;
  let readmissions = 0;
  let refusedLogins = 0;
  try {
    const unibusSample = async (tag: string): Promise<number> => {
      const member = await bus.addMember(`p5c-${tag}`);
      const victims = [member.client, ...(await Promise.all(nodes.slice(1).map((n) => bus.connectAs(member.identity, n.url))))];
      const gone = victims.map((v) => disconnected(v.nc));
      const t0 = performance.now();
      const reply = await bus.admin.users.revoke(member.principal);
      if (reply.kick.kicked !== victims.length) {
        gone.forEach((g) => g.stop());
        await Promise.allSettled(victims.map((v) => v.close()));
        throw new Error(`revoke kicked ${JSON.stringify(reply.kick)}, expected ${victims.length}`);
      }
      const closedAt = Math.max(...(await Promise.all(gone.map((g) => g.done))));
      // The watch window itself (a measurement, not a wait for an event):
      // the victims keep reconnecting, each one refused unless the bus errs.
      // One sample at a time, so the refused logins never load the next sample.
      const watch = victims.map(admissions);
      await sleep(READMIT_WATCH_MS);
      readmissions += watch.reduce((sum, w) => sum + w.count(), 0);
      refusedLogins += watch.reduce((sum, w) => sum + w.refused(), 0);
      watch.forEach((w) => w.stop());
      await Promise.allSettled(victims.map((v) => v.close()));
      return closedAt - t0;
    };
    const rawSample = async (): Promise<number> => {
      // Config-level users (a service's) skip the callout: nothing unibus is on their path.
      const victims = await Promise.all(nodes.map((n) => bus.serviceConnection("healthz", n)));
      try {
        const gone = victims.map(disconnected);
        const t0 = performance.now();
        await Promise.all(
          victims.map(async (v) => {
            const { server_id: serverId, client_id: cid } = v.info ?? {};
            if (serverId === undefined || cid === undefined) throw new Error("no server info on the raw victim");
            const reply = (await bus.system.request(SystemSubject.kick(serverId), JSON.stringify({ cid }), { timeout: SAMPLE_TIMEOUT_MS })).json<{ error?: unknown }>();
            if (reply.error !== undefined) throw new Error(`raw kick refused: ${JSON.stringify(reply.error)}`);
          }),
        );
        return Math.max(...(await Promise.all(gone.map((g) => g.done)))) - t0;
      } finally {
        await Promise.allSettled(victims.map((v) => v.close()));
      }
    };

    const cases = await pairedCases(`P5C revoke → 3 nodes disconnected (${opts.samples})`, "p99 < 100 ms", opts.samples, unibusSample, rawSample);
    return { readmissions, refusedLogins, cases };
  } finally {
    await bus.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf("--samples");
  const samples = i > 0 ? Number(process.argv[i + 1]) : undefined;
  if (process.argv.includes("--cluster")) {
    const { cases, readmissions, refusedLogins } = await runRevokeKickCluster({ samples: samples ?? 20 });
    for (const c of cases) printCase(c);
    console.log(`P5C re-admissions within 5 s of a revoke: ${readmissions} (goal 0; ${refusedLogins} reconnects refused)`);
    if (readmissions > 0) process.exitCode = 1;
  } else {
    for (const c of await runRevokeKick({ samples: samples ?? 40 })) printCase(c);
  }
}
