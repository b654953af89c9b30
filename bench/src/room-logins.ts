/**
 * P12: a principal in many rooms. Its login JWT carries one pub and one sub
 * grant per room, so it grows with the rooms; the figure is the login p50
 * (connect through the callout, sequential, interleaved) of a principal in
 * 1,000 rooms ÷ the same principal's login in one room, plus the JWT and
 * callout reply sizes, and whether a principal in 5,000 rooms logs in at all.
 * Where /proc is readable it also prints the CPU each process (nats-server,
 * the callout child, this client) spends per login at each size: the
 * difference says who pays for the rooms, which wall time alone cannot.
 *
 *   npx tsx bench/src/room-logins.ts [--samples 60]
 */
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { NkeyPrefix, SigningKey, encodeNkeySeed, nkeyAuthenticator, randomBytes, toHex } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { encodeAuthorizationResponse, encodeUserJwt, permissionsFor } from "@unibus/auth-callout";
import { calloutServerConfig, servicePermissions } from "@unibus/kit";
import type { AuthorizationRequest, CalloutContext, RoomsRecord } from "@unibus/auth-callout";
import { benchRecords, startCalloutWorker } from "./callout-connects.js";
import { numberArg, percentile, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

/** Room ids as the SDK derives them: 24 hex characters. */
function roomIds(n: number): Record<string, "member"> {
  const rooms: Record<string, "member"> = {};
  for (let i = 0; i < n; i++) rooms[toHex(randomBytes(12))] = "member";
  return rooms;
}

/** Bytes of the user JWT and of the (unsealed) authorization response the callout signs for `rooms`. */
export function loginSizes(issuer: SigningKey, principal: string, rooms: RoomsRecord): { jwt: number; response: number } {
  const { user } = benchRecords(principal);
  const ctx: CalloutContext = { issuer, appAccount: "UNIBUS", directory: { lookup: () => Promise.resolve(null) } };
  // Server ids and user nkeys have fixed lengths; any valid ones give the real sizes.
  const request = { user_nkey: SigningKey.generate().principal, server_id: { id: SigningKey.generate().nkeyPublic(NkeyPrefix.server), name: "n", host: "h" }, client_info: {}, connect_opts: {} } as AuthorizationRequest;
  const jwt = encodeUserJwt(ctx, request, principal, permissionsFor({ kind: "user", user }, rooms));
  return { jwt: jwt.length, response: encodeAuthorizationResponse(ctx, request, { jwt }).length };
}

async function loginMs(url: string, key: SigningKey): Promise<number> {
  const start = performance.now();
  const nc = await connect({ servers: url, authenticator: nkeyAuthenticator(key), inboxPrefix: `_INBOX.${key.principal}`, reconnect: false, timeout: 10_000 });
  const ms = performance.now() - start;
  await nc.close();
  return ms;
}

/** CPU ms (user + system) of process `pid` so far, from /proc; undefined where there is none. */
function cpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th, in clock ticks (100 Hz).
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

/** CPU per process accumulated over many logins of one size (ticks are 10 ms, so only sums mean much). */
class CpuTally {
  readonly #pids: readonly (number | undefined)[];
  readonly #sums: number[];
  #logins = 0;
  #ok = true;

  constructor(pids: readonly (number | undefined)[]) {
    this.#pids = pids;
    this.#sums = pids.map(() => 0);
  }

  async around(login: () => Promise<number>): Promise<number> {
    const before = this.#pids.map(cpuMs);
    const ms = await login();
    this.#pids.forEach((pid, i) => {
      const [b, a] = [before[i], cpuMs(pid)];
      if (a === undefined || b === undefined) this.#ok = false;
      else this.#sums[i]! += a - b;
    });
    this.#logins++;
    return ms;
  }

  /** ms of CPU per login, per process; undefined when /proc was not readable. */
  perLogin(): number[] | undefined {
    return this.#ok && this.#logins > 0 ? this.#sums.map((s) => s / this.#logins) : undefined;
  }
}

async function seed(users: KV, rooms: KV, key: SigningKey, n: number): Promise<RoomsRecord> {
  const record: RoomsRecord = { principal: key.principal, rooms: roomIds(n) };
  await users.put(key.principal, JSON.stringify(benchRecords(key.principal).user));
  await rooms.put(key.principal, JSON.stringify(record));
  return record;
}

/** P12: login p50 at 1,000 rooms ÷ at one room (lower is better), JWT sizes, and the 5,000-room login. */
export async function runRoomLogins(opts: { samples: number }): Promise<{ cases: BenchCase[]; notes: string[] }> {
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const calloutUser = SigningKey.generate();
  const membership = SigningKey.generate();
  const [one, many, most] = [SigningKey.generate(), SigningKey.generate(), SigningKey.generate()];
  let server: TestServer | undefined;
  let child: ChildProcess | undefined;
  try {
    server = await startTestServer({
      config: calloutServerConfig({
        issuerAccountPublic: issuer.principal,
        calloutUserPublic: calloutUser.principal,
        serviceUsers: [{ service: "membership", nkey: membership.principal, permissions: servicePermissions({ service: "membership", kvBuckets: ["users", "rooms_by_member"] }) }],
      }),
    });
    const admin = await connect({ servers: server.url, authenticator: nkeyAuthenticator(membership), reconnect: false });
    const kvm = new Kvm(admin);
    const users = await kvm.create("users", { allow_direct: false });
    const rooms = await kvm.create("rooms_by_member", { allow_direct: false });
    const records = [await seed(users, rooms, one, 1), await seed(users, rooms, many, 1_000), await seed(users, rooms, most, 5_000)];
    await admin.close();
    child = await startCalloutWorker({ url: server.url, calloutSeed: calloutUser.nkeySeed(), issuerSeed: issuer.nkeySeed() });

    await loginMs(server.url, most);
    // The same warm-up for both sizes, interleaved as measured: JIT, the
    // callout's caches, the server's account state.
    for (let i = 0; i < 5; i++) for (const k of [one, many]) await loginMs(server.url, k);
    const samples: [number[], number[]] = [[], []];
    const pids = [server.pid, child.pid, process.pid];
    const tallies = [new CpuTally(pids), new CpuTally(pids)] as const;
    for (let i = 0; i < opts.samples; i++) {
      samples[0].push(await tallies[0].around(() => loginMs(server!.url, one)));
      samples[1].push(await tallies[1].around(() => loginMs(server!.url, many)));
    }
    const mostSamples: number[] = [];
    for (let i = 0; i < Math.max(5, Math.floor(opts.samples / 4)); i++) mostSamples.push(await loginMs(server.url, most));
    const sizes = records.map((r) => loginSizes(issuer, r.principal, r));
    const kb = (n: number): string => `${(n / 1024).toFixed(1)} KiB`;
    return {
      cases: [
        { name: "P12 login p50, 1,000 rooms vs 1 room", unit: "ms", unibus: percentile(samples[1], 50), raw: percentile(samples[0], 50), goal: "<= 3x (ratio >= 0.33)", lowerIsBetter: true },
        { name: "P12 login p50, 5,000 rooms vs 1 room", unit: "ms", unibus: percentile(mostSamples, 50), raw: percentile(samples[0], 50), goal: "logs in", lowerIsBetter: true },
      ],
      notes: [
        ...[1, 1_000, 5_000].map((n, i) => `P12 ${n.toLocaleString("en-US")} room(s): user JWT ${kb(sizes[i]!.jwt)}, callout reply ${kb(sizes[i]!.response)} (payload limit 1,024 KiB)`),
        ...cpuNotes(tallies),
      ],
    };
  } finally {
    child?.stdin?.end();
    if (child !== undefined && child.exitCode === null) child.kill();
    if (child !== undefined) await Promise.race([once(child, "exit"), new Promise((r) => setTimeout(r, 2000))]);
    await server?.stop();
  }
}

function cpuNotes(tallies: readonly [CpuTally, CpuTally]): string[] {
  const [one, many] = [tallies[0].perLogin(), tallies[1].perLogin()];
  if (one === undefined || many === undefined) return ["P12 CPU per login: /proc not readable, not measured"];
  const row = (c: number[]): string => `nats-server ${c[0]!.toFixed(2)}, callout ${c[1]!.toFixed(2)}, client ${c[2]!.toFixed(2)} ms`;
  return [`P12 CPU per login, 1 room: ${row(one)}`, `P12 CPU per login, 1,000 rooms: ${row(many)}`];
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { cases, notes } = await runRoomLogins({ samples: numberArg("--samples", 60) });
  for (const n of notes) console.log(n);
  for (const c of cases) printCase(c);
}
