/**
 * P4: rekey of a 1,000-member room. One owner's `rekeyRoom`: fetch and
 * verify the room's membership log (all 1,000+ entries cold, only what is
 * new when warm), read the epochs and the members' agreement keys, a fresh room key sealed to 1,000
 * members, one signature, and `epochs.publish` (the service checks the set
 * against the membership, verifies the signature, stores ONE record) — until
 * the durable reply. Measured cold (the owner checks the 1,000 log
 * entries and verifies 1,000 agreement-key bindings first, as a fresh
 * client does; the owner signed every entry of this log, so its client
 * checks each by signing it again, which costs about a third of a
 * verification: a log signed by other owners costs a verify per entry),
 * warm (bindings already verified, log up to date), and after a removal
 * with the next epoch prepared in advance (`prepareNextEpoch`, which
 * `autoRekey` keeps ready: sealing is most of the work, and it can be done
 * before the change; the prepared key never leaves the owner's process
 * until it is published).
 *
 * raw, same run: 1,000 sequential `kv.put`s of a share-sized value into a
 * scratch bucket — what storing one record per share would cost. Goal:
 * rekey ≤ raw, i.e. ratio (raw ÷ unibus) ≥ 1.0.
 *
 * Layout: membership and keys run as `unibus up` runs them by default, both
 * in ONE child process of their own (services/embedded-main.ts, started with
 * the supervisor's lifeline preload), so the rekeying client has its process
 * to itself, as the raw side does and as a product client always does.
 * `--in-process` keeps the older layout (the services on the client's own
 * event loop) for comparison.
 *
 *   npx tsx bench/src/rekey.ts [--members 1000] [--samples 5] [--in-process] [--co-owner-invites] [--cpu-prof <file>]
 */
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { fileURLToPath } from "node:url";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { pino } from "pino";
import { createIdentity, randomBytes, signEnvelope, toBase64Url } from "@unibus/crypto";
import type { SigningKey } from "@unibus/crypto";
import { ServiceName } from "@unibus/contracts";
import { PARENT_LIFELINE_FD_ENV, PARENT_LIFELINE_PRELOAD } from "@unibus/kit";
import { KeysBucket, createKeysService } from "@unibus/keys";
import { MembershipBucket, createMembershipService, memberKey } from "@unibus/membership";
import { RoomLogOp, RoomLogOpSubject, ZERO_HASH, agreementKeyStatementBytes, connect, deriveRoomId, prepareNextEpoch, rekeyRoom, roomLogEntry, roomLogEntryHash } from "@unibus/sdk";
import type { RoomLogRole } from "@unibus/sdk";
import { eventually, retryUntil, startTestServer } from "@unibus/testing";
import { numberArg, percentile, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

const silent = pino({ level: "silent" });

/** Options of {@link runRekey}. */
export interface RekeyOptions {
  /** Room size. Default 1,000. */
  members?: number;
  /** Warm rekeys to time (median reported). Default 5. */
  samples?: number;
  /** Run membership and keys on this process's event loop (the older layout) instead of in their own process. */
  inProcess?: boolean;
  /** Write a V8 CPU profile of this process's main thread over the cold rekey alone to this file (`.cpuprofile`). */
  cpuProfile?: string;
  /**
   * A second owner, invited first, invites everyone else, so the rekeying
   * owner's client verifies every log entry instead of checking its own by
   * signing again (default: the owner invites everyone).
   */
  coOwnerInvites?: boolean;
}

/** Profiles this thread from now until the returned function is called, which writes the profile to `file`. */
async function profileMainThread(file: string): Promise<() => Promise<void>> {
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  return async () => {
    const { profile } = await session.post("Profiler.stop");
    writeFileSync(file, JSON.stringify(profile), { mode: 0o600 });
    session.disconnect();
  };
}

/** `unibus up`'s one process for every service; started by path, as the supervisor does. */
const EMBEDDED_MAIN = fileURLToPath(new URL("../../services/embedded-main.ts", import.meta.url));
/** Descriptor of the lifeline pipe in the child (0-2 are stdio). */
const LIFELINE_FD = 3;
/** How long the services' process may take to answer its pings (TypeScript loader, bucket set-up, a loaded box). */
const SERVICES_READY_MS = 60_000;

/** CPU ms (user + system, all threads) of process `pid` so far, from /proc (100 Hz ticks); undefined where there is none. */
function procCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
    const ms = (Number(fields[11]) + Number(fields[12])) * 10;
    return Number.isFinite(ms) ? ms : undefined;
  } catch {
    return undefined;
  }
}

/** How long the services' process must burn no more than one 10 ms tick to count as idle. */
const SETTLE_WINDOW_MS = 250;
const SETTLE_MAX_MS = 30_000;

/**
 * Waits until the services' process is idle: the keys service's removals
 * consumer may still work through the set-up's 1,000 member puts after the
 * bench's writes are acknowledged, and a cold rekey measured meanwhile
 * would time that backlog, which no real rekey meets, against a raw side
 * that runs on an idle server. Returns the ms waited, or undefined if it
 * never settled (the run goes on; the figure says so).
 */
async function settle(host: ServicesHost): Promise<number | undefined> {
  const t0 = performance.now();
  // eventually reads at once: the first read only starts the first window.
  let last = Number.NaN;
  try {
    await eventually(
      () => host.hostCpuMs(),
      (now) => {
        const idle = now - last <= 10; // false on the first read (NaN)
        last = now;
        return idle;
      },
      { timeoutMs: SETTLE_MAX_MS, intervalMs: SETTLE_WINDOW_MS, what: "services idle" },
    );
    return performance.now() - t0;
  } catch {
    return undefined;
  }
}

/** Where membership and keys run for the bench, and how to stop them. */
interface ServicesHost {
  /** The services' process CPU ms so far; undefined in process (their share cannot be told from the client's). */
  cpuMs(): number | undefined;
  /** CPU ms so far of the process the services run in (this one, in process), to see when they are idle. */
  hostCpuMs(): number;
  stop(): Promise<void>;
}

async function servicesInProcess(nc: NatsConnection): Promise<ServicesHost> {
  const membership = await createMembershipService(nc, { logger: silent });
  const keys = await createKeysService(nc, { logger: silent });
  return {
    cpuMs: () => undefined,
    hostCpuMs: () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    },
    async stop() {
      await keys.stop();
      await membership.stop();
    },
  };
}

/**
 * Membership and keys in one child process, as `unibus up` runs them by
 * default. The lifeline pipe ends the child however this process dies (even
 * SIGKILL), and `stop` plus an exit hook end it on every other path, so a
 * failed or interrupted bench leaves no service serving on.
 */
async function servicesInChild(url: string, nc: NatsConnection): Promise<ServicesHost> {
  const { UNIBUS_IDENTITY: _identity, ...base } = process.env;
  const env = {
    ...base,
    UNIBUS_URL: url,
    UNIBUS_LOG_LEVEL: "error",
    UNIBUS_EMBEDDED_SERVICES: JSON.stringify({ [ServiceName.membership]: {}, [ServiceName.keys]: {} }),
    [PARENT_LIFELINE_FD_ENV]: String(LIFELINE_FD),
  };
  const child = spawn(process.execPath, ["--import", PARENT_LIFELINE_PRELOAD, "--import", "tsx", EMBEDDED_MAIN], { env, stdio: ["ignore", "pipe", "pipe", "pipe"] });
  child.stdio[LIFELINE_FD]?.on("error", () => undefined);
  let output = "";
  const keep = (d: Buffer): void => {
    output = (output + d.toString()).slice(-4_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const killOnExit = (): void => {
    child.kill("SIGKILL");
  };
  process.once("exit", killOnExit);
  const stop = async (): Promise<void> => {
    process.off("exit", killOnExit);
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), 15_000)));
    if ((await Promise.race([exited, late])) === "late") {
      child.kill("SIGKILL");
      await exited;
    }
    clearTimeout(timer);
  };
  try {
    // Ready when both answer their micro ping (registered after their buckets
    // exist); a child that dies first fails the bench with its output.
    const ping = (name: string) => nc.request(`$SRV.PING.${name}`, undefined, { timeout: 1_000 });
    const ready = retryUntil(() => Promise.all([ping(ServiceName.membership), ping(ServiceName.keys)]), { timeoutMs: SERVICES_READY_MS, intervalMs: 200 });
    const died = exited.then((code) => Promise.reject(new Error(`the services' process exited (${code}) before it was ready:\n${output}`)));
    await Promise.race([ready, died]);
  } catch (err) {
    await stop();
    throw err;
  }
  return { cpuMs: () => procCpuMs(child.pid), hostCpuMs: () => procCpuMs(child.pid) ?? 0, stop };
}

/** P4: cold and warm rekey of a large room against 1,000 sequential raw KV puts, same server. */
export async function runRekey(opts: RekeyOptions = {}): Promise<BenchCase[]> {
  const n = opts.members ?? 1_000;
  const samples = opts.samples ?? 5;
  const server = await startTestServer({ jetstream: true });
  const nc = await server.connect();
  let services: ServicesHost | undefined;
  let closeClient: (() => Promise<void>) | undefined;
  try {
    services = opts.inProcess === true ? await servicesInProcess(nc) : await servicesInChild(server.url, nc);
    const owner = createIdentity();
    const client = await connect({ url: server.url, identity: owner, requestTimeoutMs: 30_000 });
    closeClient = () => client.close();
    // Set-up writes the data model directly: 1,000 signed users.add/invite
    // round trips would only slow the bench, not change what it measures.
    const kvm = new Kvm(jetstream(nc));
    const users = await kvm.open(MembershipBucket.users);
    const members = await kvm.open(MembershipBucket.members);
    const roomLog = await kvm.open(MembershipBucket.roomLog);
    const agreementKeys = await kvm.open(KeysBucket.agreementKeys);
    const at = new Date().toISOString();
    const people = [owner, ...Array.from({ length: n - 1 }, () => createIdentity())];
    // The room's membership log, signed by the owner as the service would
    // store it: the owner's first rekey fetches and verifies all of it (cold).
    // Chained here without verifying: a verification would put every
    // entry's signature into this process's verified-once cache, and the
    // owner's cold rekey (same process) would then find them done instead
    // of verifying them as a fresh client does.
    const enc = new TextEncoder();
    /** A room of `who` (the owner first) written as the services would store it; returns its id and a log appender. */
    const buildRoom = async (name: string, who: readonly ReturnType<typeof createIdentity>[]) => {
      let roomId = "";
      const chain = { length: 0, headHash: ZERO_HASH };
      const appendLog = async (actor: SigningKey, op: RoomLogOp, body: object, target: string, role?: RoomLogRole): Promise<void> => {
        const bytes = enc.encode(JSON.stringify(body));
        const envelope = signEnvelope(actor, RoomLogOpSubject[op], bytes);
        if (op === RoomLogOp.create) roomId = deriveRoomId(envelope.signature);
        const entry = roomLogEntry({ after: chain, roomId, op, body: bytes, envelope, target, ...(role === undefined ? {} : { role }), at });
        chain.length += 1;
        chain.headHash = roomLogEntryHash(entry);
        await roomLog.create(`${roomId}.${entry.seq}`, JSON.stringify(entry));
      };
      await appendLog(owner.signingKey, RoomLogOp.create, { name, policy: { persist: false, encrypt: true } }, owner.principal, "owner");
      // With a co-owner: the owner invites it as an owner, and it invites the rest.
      const coOwner = opts.coOwnerInvites === true ? who[1] : undefined;
      if (coOwner !== undefined) await appendLog(owner.signingKey, RoomLogOp.invite, { roomId, principal: coOwner.principal, role: "owner" }, coOwner.principal, "owner");
      for (const id of who.slice(coOwner === undefined ? 1 : 2)) await appendLog((coOwner ?? owner).signingKey, RoomLogOp.invite, { roomId, principal: id.principal }, id.principal, "member");
      await Promise.all(
        who.map(async (id, i) => {
          const role = i === 0 || (opts.coOwnerInvites === true && i === 1) ? "owner" : "member";
          await users.put(id.principal, JSON.stringify({ principal: id.principal, handle: `${name}-m${i}`, role: "member", status: "active", addedAt: at, addedBy: owner.principal }));
          await members.put(memberKey(roomId, id.principal), JSON.stringify({ roomId, principal: id.principal, role, addedAt: at, addedBy: owner.principal }));
          const signature = toBase64Url(id.signingKey.sign(agreementKeyStatementBytes(id.principal, id.agreementPublicKey)));
          await agreementKeys.put(id.principal, JSON.stringify({ principal: id.principal, agreementKey: toBase64Url(id.agreementPublicKey), signature }));
        }),
      );
      return { roomId, appendLog };
    };
    const { roomId, appendLog } = await buildRoom("p4", people);

    const timeRekey = async (room = roomId): Promise<number> => {
      const t0 = performance.now();
      const r = await rekeyRoom(client, owner.signingKey, room);
      const ms = performance.now() - t0;
      if (!r.published || r.withoutShare.length > 0) throw new Error("bench rekey did not publish a full share set");
      return ms;
    };
    const timeRaw = async (): Promise<number> => {
      const scratch = await kvm.create(`bench_p4_${randomBytes(4).reduce((s, b) => s + b.toString(16).padStart(2, "0"), "")}`);
      const value = randomBytes(200);
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await scratch.put(`k${i}`, value);
      const ms = performance.now() - t0;
      await scratch.destroy();
      return ms;
    };

    // The cold rekey's timeline: when each reply and each page of the log
    // arrive (a page is named by its first entry), when the log is verified,
    // when the publish leaves (sealing, Merkle root and signature done) and
    // when it is durable; and this process's CPU time meanwhile (all
    // threads: the client, its crypto pool and the in-process services),
    // which swings less than wall time on a shared machine. Timed on this
    // client's own calls, so nothing else runs. Beside it, from /proc, the
    // services' process and nats-server (10 ms ticks).
    const marks: string[] = [];
    const t0 = { at: 0 };
    const mark = <T>(name: string, p: Promise<T>): Promise<T> =>
      p.then((v) => {
        marks.push(`${name} ${(performance.now() - t0.at).toFixed(0)}`);
        return v;
      });
    const { keys: api, roomLogs } = client;
    const real = { agreementKeys: api.agreementKeys.bind(api), epochs: api.epochs.bind(api), publishEpoch: api.publishEpoch.bind(api), sync: roomLogs.sync.bind(roomLogs) };
    api.agreementKeys = (roomId) => mark("agreement keys", real.agreementKeys(roomId));
    api.epochs = (roomId) => mark("epochs", real.epochs(roomId));
    roomLogs.sync = (roomId, atLeast) => mark("log verified", real.sync(roomId, atLeast));
    const realLogPage = client.rooms.log.bind(client.rooms);
    client.rooms.log = (roomId, fromSeq, limit) => mark(`log page ${fromSeq}`, realLogPage(roomId, fromSeq, limit));
    api.publishEpoch = (req) => {
      marks.push(`publish sent ${(performance.now() - t0.at).toFixed(0)} (${(JSON.stringify(req).length / 1024).toFixed(0)} KiB)`);
      return mark("durable", real.publishEpoch(req));
    };
    const host = services;
    const settledMs = await settle(host);
    const stopProfile = opts.cpuProfile === undefined ? undefined : await profileMainThread(opts.cpuProfile);
    t0.at = performance.now();
    const servicesCpu0 = host.cpuMs();
    const serverCpu0 = procCpuMs(server.pid);
    const cpu0 = process.cpuUsage();
    const cold = await timeRekey();
    const cpu = process.cpuUsage(cpu0);
    await stopProfile?.();
    const servicesCpu1 = host.cpuMs();
    const serverCpu1 = procCpuMs(server.pid);
    const delta = (a: number | undefined, b: number | undefined): string => (a === undefined || b === undefined ? "n/a" : `${b - a} ms`);
    Object.assign(api, { agreementKeys: real.agreementKeys, epochs: real.epochs, publishEpoch: real.publishEpoch });
    roomLogs.sync = real.sync;
    client.rooms.log = realLogPage;
    console.log(
      `P4 cold timeline (${opts.inProcess === true ? "services in the client's process" : "services in their own process"}; ${settledMs === undefined ? "services never idle" : `services idle after ${settledMs.toFixed(0)} ms`}; ms from the start; ${n} bindings verified and ${n} log entries checked cold, as a fresh client does: ${opts.coOwnerInvites === true ? "a co-owner signed the invites, so each entry is verified" : "the owner signed every entry, so each is checked by signing it again"}): ${marks.join(", ")}; ` +
        `CPU: client ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms, services' process ${opts.inProcess === true ? "(in the client's)" : delta(servicesCpu0, servicesCpu1)}, nats-server ${delta(serverCpu0, serverCpu1)}`,
    );
    const rawCold = await timeRaw();
    const warm: number[] = [];
    const raw: number[] = [];
    // Interleaved, so drift on the shared machine hits both columns alike.
    for (let i = 0; i < samples; i++) {
      warm.push(await timeRekey());
      raw.push(await timeRaw());
    }
    // A removal with the next epoch prepared in advance (what autoRekey
    // keeps ready): the owner only re-reads, signs and publishes.
    const prepared: number[] = [];
    const rawPrepared: number[] = [];
    for (let i = 0; i < samples; i++) {
      await prepareNextEpoch(client, roomId);
      const removed = people[people.length - 1 - i]!.principal;
      await appendLog(owner.signingKey, RoomLogOp.remove, { roomId, principal: removed }, removed);
      await members.delete(memberKey(roomId, removed));
      prepared.push(await timeRekey());
      rawPrepared.push(await timeRaw());
    }
    // A second room of as many other members, rekeyed once: its log and
    // bindings are as cold as the first room's were, but this process and
    // the services' have compiled their code by now. Beside the cold figure
    // (whose process was fresh), it tells cold data from a cold JIT.
    const second = await buildRoom("p4-second", [owner, ...Array.from({ length: n - 1 }, () => createIdentity())]);
    await settle(host);
    const coldCompiled = await timeRekey(second.roomId);
    const rawCompiled = await timeRaw();
    const goal = "≥ 1.00 (rekey ≤ 1,000 sequential puts)";
    return [
      { name: `P4 rekey ${n} members, cold (1 sample)`, unit: "ms", unibus: cold, raw: rawCold, lowerIsBetter: true, goal },
      { name: `P4 rekey ${n} members, cold data in a compiled process (1 sample)`, unit: "ms", unibus: coldCompiled, raw: rawCompiled, lowerIsBetter: true, goal: "none: tells a cold JIT from cold data" },
      { name: `P4 rekey ${n} members, warm (p50 of ${samples})`, unit: "ms", unibus: percentile(warm, 50), raw: percentile(raw, 50), lowerIsBetter: true, goal },
      { name: `P4 removal rekey, prepared (p50 of ${samples})`, unit: "ms", unibus: percentile(prepared, 50), raw: percentile(rawPrepared, 50), lowerIsBetter: true, goal },
    ];
  } finally {
    await closeClient?.();
    await services?.stop();
    await nc.close();
    await server.stop();
  }
}

/** `--cpu-prof <file>`: profile the cold rekey (standalone runs only). */
function profileArg(): { cpuProfile?: string } {
  const i = process.argv.indexOf("--cpu-prof");
  const file = i >= 0 ? process.argv[i + 1] : undefined;
  return file === undefined ? {} : { cpuProfile: file };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const c of await runRekey({ members: numberArg("--members", 1_000), samples: numberArg("--samples", 5), inProcess: process.argv.includes("--in-process"), coOwnerInvites: process.argv.includes("--co-owner-invites"), ...profileArg() })) printCase(c);
}
