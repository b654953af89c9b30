/**
 * P1s: a reconnect storm. N clients (default 1,000, each its own principal)
 * are connected through the auth callout; the server restarts; the figure is
 * the time from the old server gone until every client has reconnected,
 * against the same storm on a server with plain nkey users and no callout
 * (JetStream on both, so the restarts themselves cost alike; measuring from
 * "ready" instead gave 0 ms for plain nkey, whose clients were back before
 * the readiness probe answered). Clients use the SDK's reconnect settings (reconnect
 * forever, auth errors included, {@link ReconnectBackoff} delays); the
 * callout runs in its own process with the callout service's reconnect
 * settings, so its own way back is part of the figure. A third server runs
 * the same storm through P1's floor callout (it checks and reads nothing,
 * only signs), so the figure is also printed ÷ that floor: what no callout
 * can avoid (the server's side of the protocol, per login) is not ours.
 *
 *   npx tsx bench/src/reconnect-storm.ts [--clients 1000] [--runs 1] [--leader-reads]
 *
 * `--leader-reads`: the callout reads the directory from the stream leaders
 * per login (the previous design) instead of its fenced watched copy.
 *
 * `BENCH_DEBUG=1` prints each storm's time and the logins refused during it.
 */
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { NkeyPrefix, SigningKey, encodeNkeySeed, nkeyAuthenticator, randomBytes } from "@unibus/crypto";
import { ReconnectBackoff } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { calloutServerConfig, servicePermissions } from "@unibus/kit";
import { benchRecords, startCalloutWorker } from "./callout-connects.js";
import { numberArg, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

/** Options of {@link runReconnectStorm}. */
export interface ReconnectStormOptions {
  /** Clients in the storm. The issue's figure is 1,000. */
  clients: number;
  /** Storms per side (each side restarts its server this many times). */
  runs: number;
  /** Two leader reads per login instead of the fenced watched copy. Default false. */
  leaderReads?: boolean;
}

/** Connecting the storm's clients, this many at a time (the initial fill is not measured). */
const FILL_CONCURRENCY = 32;
/** A storm that has not settled by then is reported as failed rather than waited on forever. */
const STORM_TIMEOUT_MS = 180_000;

interface Fleet {
  conns: NatsConnection[];
  /** Resolves when every client has reported `reconnect` since the last {@link arm}. */
  arm(): Promise<void>;
  /** Logins refused since the last {@link arm}. */
  readonly refusals: number;
}

async function connectFleet(url: string, keys: readonly SigningKey[]): Promise<Fleet> {
  const conns: NatsConnection[] = [];
  let waiting = 0;
  let done: (() => void) | undefined;
  const pending = new Set<number>();
  let refusals = 0;
  const open = async (i: number): Promise<void> => {
    const key = keys[i]!;
    const backoff = new ReconnectBackoff();
    // The SDK's connection options (libs/sdk connect): what a real fleet does.
    const nc = await connect({
      servers: url,
      authenticator: nkeyAuthenticator(key),
      inboxPrefix: `_INBOX.${key.principal}`,
      ignoreAuthErrorAbort: true,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectDelayHandler: () => backoff.delayMs(),
      timeout: 10_000,
    });
    conns[i] = nc;
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === "error" && s.error.name === "AuthorizationError") {
          backoff.refused();
          refusals++;
        }
        if (s.type === "reconnect") {
          backoff.connected();
          if (pending.delete(i)) {
            waiting--;
            if (waiting === 0) done?.();
          }
        }
      }
    })();
  };
  let next = 0;
  await Promise.all(
    Array.from({ length: FILL_CONCURRENCY }, async () => {
      while (next < keys.length) await open(next++);
    }),
  );
  return {
    conns,
    get refusals() {
      return refusals;
    },
    arm() {
      refusals = 0;
      pending.clear();
      for (let i = 0; i < conns.length; i++) pending.add(i);
      waiting = conns.length;
      return new Promise<void>((resolve) => {
        done = resolve;
      });
    },
  };
}

/** Restarts `server` under a connected fleet; ms from the old process gone to the last client back. */
async function storm(server: TestServer, fleet: Fleet): Promise<number> {
  const all = fleet.arm();
  await server.halt();
  const gone = performance.now();
  await server.resume();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      all,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`reconnect storm did not settle in ${STORM_TIMEOUT_MS} ms`)), STORM_TIMEOUT_MS);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
  if (process.env["BENCH_DEBUG"] !== undefined) console.log(`storm: ${Math.round(performance.now() - gone)} ms, ${fleet.refusals} refusals`);
  return performance.now() - gone;
}

/**
 * P1s: restart under N connected clients, callout vs plain nkey. The raw
 * column is the plain-nkey storm; both are times, so lower is better.
 */
export async function runReconnectStorm(opts: ReconnectStormOptions): Promise<BenchCase[]> {
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const calloutUser = SigningKey.generate();
  const membership = SigningKey.generate();
  const keys = Array.from({ length: opts.clients }, () => SigningKey.generate());
  const servers: TestServer[] = [];
  const fleets: Fleet[] = [];
  const children: ChildProcess[] = [];
  try {
    // JetStream on, as on the callout's server, so both restarts start alike.
    const raw = await startTestServer({ jetstream: true, config: { authorization: { users: keys.map((k) => ({ nkey: k.principal })) } } });
    servers.push(raw);
    const unibus = await startTestServer({
      config: calloutServerConfig({
        issuerAccountPublic: issuer.principal,
        calloutUserPublic: calloutUser.principal,
        serviceUsers: [{ service: "membership", nkey: membership.principal, permissions: servicePermissions({ service: "membership", kvBuckets: ["users", "rooms_by_member"] }) }],
      }),
    });
    servers.push(unibus);
    const admin = await connect({ servers: unibus.url, authenticator: nkeyAuthenticator(membership), reconnect: false });
    const kvm = new Kvm(admin);
    const users = await kvm.create("users", { allow_direct: false });
    const rooms = await kvm.create("rooms_by_member", { allow_direct: false });
    for (const k of keys) {
      const r = benchRecords(k.principal);
      await Promise.all([users.put(k.principal, JSON.stringify(r.user)), rooms.put(k.principal, JSON.stringify(r.rooms))]);
    }
    await admin.close();
    children.push(await startCalloutWorker({ url: unibus.url, calloutSeed: calloutUser.nkeySeed(), issuerSeed: issuer.nkeySeed(), ...(opts.leaderReads === true ? { leaderReads: true } : {}) }));
    // The floor: the same server configuration and process layout, with the
    // do-nothing callout of P1 (it only signs), so the storm's share that no
    // callout can avoid (the server's side of the protocol) is measured too.
    const floor = await startTestServer({ config: calloutServerConfig({ issuerAccountPublic: issuer.principal, calloutUserPublic: calloutUser.principal }) });
    servers.push(floor);
    children.push(await startCalloutWorker({ url: floor.url, calloutSeed: calloutUser.nkeySeed(), issuerSeed: issuer.nkeySeed(), floorPrincipal: keys[0]!.principal }));

    const rawFleet = await connectFleet(raw.url, keys);
    fleets.push(rawFleet);
    const unibusFleet = await connectFleet(unibus.url, keys);
    fleets.push(unibusFleet);
    const floorFleet = await connectFleet(floor.url, keys);
    fleets.push(floorFleet);

    const rawMs: number[] = [];
    const unibusMs: number[] = [];
    const floorMs: number[] = [];
    for (let i = 0; i < opts.runs; i++) {
      rawMs.push(await storm(raw, rawFleet));
      unibusMs.push(await storm(unibus, unibusFleet));
      floorMs.push(await storm(floor, floorFleet));
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const label = `${opts.clients} clients${opts.runs > 1 ? ` (median of ${opts.runs})` : ""}`;
    return [
      { name: `P1s reconnect storm, ${label}`, unit: "ms", unibus: median(unibusMs), raw: median(rawMs), goal: ">= 0.7", lowerIsBetter: true },
      // As in P1: where the floor itself is below 0.7 of plain, the goal is 0.9 of the floor.
      { name: `  ÷ floor (raw column = floor), ${label}`, unit: "ms", unibus: median(unibusMs), raw: median(floorMs), goal: ">= 0.9 where floor < 0.7", lowerIsBetter: true },
      { name: `  floor ÷ plain nkey, ${label}`, unit: "ms", unibus: median(floorMs), raw: median(rawMs), goal: "printed", lowerIsBetter: true },
    ];
  } finally {
    for (const f of fleets) await Promise.all(f.conns.map((nc) => nc.close().catch(() => undefined)));
    for (const child of children) {
      child.stdin?.end();
      if (child.exitCode === null) child.kill();
      await Promise.race([once(child, "exit"), new Promise((r) => setTimeout(r, 2000))]);
    }
    for (const s of servers) await s.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const clients = numberArg("--clients", 1_000);
  const runs = numberArg("--runs", 1);
  console.log(`P1s: ${clients} clients, server restarted ${runs}× per side; raw = plain nkey users, no callout; ratio = plain time ÷ callout time`);
  for (const c of await runReconnectStorm({ clients, runs, leaderReads: process.argv.includes("--leader-reads") })) printCase(c);
}
