/**
 * P3: end-to-end room messages/s (1 KB payload; encrypt + sign → verify +
 * decrypt, coalesced frames) against raw NATS pub/sub of the same payload,
 * publisher and subscriber in separate processes for both, same server, same
 * run. Also single-message latency on an idle room (publish → authenticated
 * delivery, p50/p99).
 *
 *   npx tsx bench/src/e2e-throughput.ts [--seconds 3]
 *   (internal) npx tsx bench/src/e2e-throughput.ts pub|sub raw|e2e   with UNIBUS_URL, BENCH_KEY
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { SigningKey, fromHex, randomBytes, toHex } from "@unibus/crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { RoomLimits, StaticRoomKeys, connect } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import { percentile, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

const self = fileURLToPath(import.meta.url);
const ROOM = "bench";
const RAW_SUBJECT = "bench.raw.m";
const PAYLOAD_BYTES = 1024;
/** Messages published per event-loop turn (same for both modes). */
const CHUNK = 1_000;

/**
 * The raw publisher's copy of the room's pipeline (RoomLimits
 * maxUnconfirmedBytes): a PING round trip is asked for every quarter of the
 * bound, and the publisher waits only while a whole bound of bytes is
 * unconfirmed. Both sides thus keep publishing while earlier bytes travel,
 * under the same bound, so neither is held to one round trip per chunk.
 */
class RawPipeline {
  #handed = 0;
  #pinged = 0;
  #confirmed = 0;
  readonly #pings: Promise<void>[] = [];
  constructor(
    readonly nc: NatsConnection,
    readonly bound: number,
  ) {}

  handed(bytes: number): void {
    this.#handed += bytes;
    if (this.#handed - this.#pinged >= this.bound / 4) this.#ping();
  }

  #ping(): void {
    const upTo = this.#handed;
    this.#pinged = upTo;
    this.#pings.push(this.nc.flush().then(() => void (this.#confirmed = Math.max(this.#confirmed, upTo))));
  }

  async room(): Promise<void> {
    while (this.#handed - this.#confirmed >= this.bound) {
      if (this.#pings.length === 0) this.#ping();
      await this.#pings.shift();
    }
  }
}

type Mode = "raw" | "e2e";

async function worker(role: "pub" | "sub", mode: Mode): Promise<void> {
  const url = process.env.UNIBUS_URL!;
  const keyHex = process.env.BENCH_KEY!;
  const client = await connect({ url, identity: SigningKey.generate() });
  const nc = client.nc;
  // A bare server: no membership service, so the room is live-only.
  const room = client.room(ROOM, new StaticRoomKeys().set(ROOM, 0, fromHex(keyHex)), { liveOnly: true });
  if (role === "sub") {
    let n = 0;
    let first = 0;
    let last = 0;
    let cpu0: NodeJS.CpuUsage | undefined;
    let cpu: NodeJS.CpuUsage | undefined;
    const tick = (): void => {
      last = performance.now();
      if (n++ === 0) {
        first = last;
        cpu0 = process.cpuUsage();
      }
    };
    // CPU time per message is what the shared machine's load does not change
    // much; it is read at the first message and once the sender is done.
    process.stdin.once("data", () => (cpu = process.cpuUsage(cpu0)));
    if (mode === "raw") nc.subscribe(RAW_SUBJECT, { callback: tick });
    // Both sides with a callback: the raw side has no per-message promise either.
    else
      room.subscribe((m) => {
        if (m.data.byteLength === PAYLOAD_BYTES) tick();
      });
    await nc.flush();
    process.stdout.write("ready\n");
    process.stdin.once("data", () => {
      process.stdout.write(`${JSON.stringify({ n, seconds: (last - first) / 1000, cpuUs: cpu === undefined ? 0 : cpu.user + cpu.system })}\n`);
      void nc.close().then(() => process.exit(0));
    });
    return;
  }
  const seconds = Number(process.env.BENCH_SECONDS ?? "3");
  const payload = randomBytes(PAYLOAD_BYTES);
  const cpu0 = process.cpuUsage();
  const end = performance.now() + seconds * 1000;
  const raw = new RawPipeline(nc, RoomLimits.maxUnconfirmedBytes);
  let n = 0;
  while (performance.now() < end) {
    if (mode === "raw") {
      for (let i = 0; i < CHUNK; i++) nc.publish(RAW_SUBJECT, payload);
      raw.handed(CHUNK * PAYLOAD_BYTES);
      await raw.room();
      // The room's publisher yields a turn per chunk (its batch closes at the end of the turn); so does this one.
      await new Promise((r) => setImmediate(r));
    } else {
      let lastSent: Promise<void> | undefined;
      for (let i = 0; i < CHUNK; i++) lastSent = room.publish(payload);
      // Resolves once the chunk's last frame is handed over; the room holds it back only while its pipeline is full.
      await lastSent;
    }
    n += CHUNK;
  }
  if (mode === "raw") await nc.flush();
  else await room.flush();
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(`${JSON.stringify({ n, cpuUs: cpu.user + cpu.system })}\n`);
  await nc.close();
}

/** With BENCH_CPU_PROF=<dir>, each child writes V8 CPU profiles (one per thread) under <dir>/<role>-<mode>; node refuses --cpu-prof in NODE_OPTIONS. */
function child(args: string[], env: Record<string, string>): ChildProcess {
  const prof = process.env.BENCH_CPU_PROF;
  const flags = prof === undefined || prof === "" ? [] : ["--cpu-prof", `--cpu-prof-dir=${prof}/${args.join("-")}`];
  return spawn(process.execPath, [...flags, "--import", "tsx", self, ...args], { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, ...env } });
}

async function line(c: ChildProcess): Promise<string> {
  const [chunk] = (await once(c.stdout!, "data")) as [Buffer];
  return chunk.toString().trim();
}

async function throughput(mode: Mode, url: string, seconds: number): Promise<number> {
  const env = { UNIBUS_URL: url, BENCH_KEY: toHex(randomBytes(32)), BENCH_SECONDS: String(seconds) };
  const sub = child(["sub", mode], env);
  try {
    if ((await line(sub)) !== "ready") throw new Error("subscriber did not start");
    const pub = child(["pub", mode], env);
    const { n: sent, cpuUs: pubCpu } = JSON.parse(await line(pub)) as { n: number; cpuUs: number };
    await once(pub, "exit");
    await new Promise((r) => setTimeout(r, 300));
    sub.stdin!.write("report\n");
    const { n, seconds: s, cpuUs: subCpu } = JSON.parse(await line(sub)) as { n: number; seconds: number; cpuUs: number };
    // A subscriber that got fewer than were sent was dropped by the server as a slow consumer: its side was the limit.
    console.log(`P3 ${mode}: sent ${sent}, received ${n} in ${s.toFixed(2)} s; CPU per message: publisher ${(pubCpu / sent).toFixed(2)} µs, subscriber ${(subCpu / Math.max(1, n)).toFixed(2)} µs`);
    // It exits by itself once reported (and writes its CPU profile if asked); the kill below is for failures.
    await Promise.race([once(sub, "exit"), new Promise((r) => setTimeout(r, 2_000).unref())]);
    return s > 0 ? n / s : 0;
  } finally {
    sub.kill("SIGTERM");
  }
}

async function latency(url: string, samples: number): Promise<number[]> {
  const keys = new StaticRoomKeys().set(ROOM, 0, randomBytes(32));
  const a = await connect({ url, identity: SigningKey.generate() });
  const b = await connect({ url, identity: SigningKey.generate() });
  const pub = a.room(ROOM, keys, { liveOnly: true });
  const sub = b.room(ROOM, keys, { liveOnly: true }).subscribe();
  await b.nc.flush();
  const it = sub[Symbol.asyncIterator]();
  const payload = randomBytes(PAYLOAD_BYTES);
  const out: number[] = [];
  try {
    for (let i = 0; i < samples + 20; i++) {
      const t0 = performance.now();
      void pub.publish(payload);
      await it.next();
      if (i >= 20) out.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 2));
    }
  } finally {
    sub.stop();
    await a.close();
    await b.close();
  }
  return out;
}

/** Runs P3; returns the throughput case and the latency case (raw = the bound, 5 ms). */
export async function runE2eThroughput(opts: { seconds: number }): Promise<BenchCase[]> {
  const server = await startTestServer({ jetstream: false });
  try {
    // Interleaved, so drift of the shared machine hits both sides alike.
    const raw1 = await throughput("raw", server.url, opts.seconds);
    const e2e1 = await throughput("e2e", server.url, opts.seconds);
    const raw2 = await throughput("raw", server.url, opts.seconds);
    const e2e2 = await throughput("e2e", server.url, opts.seconds);
    const lat = await latency(server.url, 500);
    const p50 = percentile(lat, 50);
    const p99 = percentile(lat, 99);
    console.log(`P3 idle-room latency, 1 KB: p50 ${p50.toFixed(3)} ms, p99 ${p99.toFixed(3)} ms (goal p99 < 5 ms)`);
    return [
      { name: "P3 e2e room 1 KB msgs (pub/sub processes)", unit: "msg/s", unibus: (e2e1 + e2e2) / 2, raw: (raw1 + raw2) / 2, goal: ">= 0.6" },
      { name: "P3 idle-room latency p99 (raw = 5 ms bound)", unit: "ms", unibus: p99, raw: 5, lowerIsBetter: true, goal: "<= 5 ms" },
    ];
  } finally {
    await server.stop();
  }
}

const [role, mode] = process.argv.slice(2);
if (process.argv[1] === self) {
  if ((role === "pub" || role === "sub") && (mode === "raw" || mode === "e2e")) await worker(role, mode);
  else {
    const i = process.argv.indexOf("--seconds");
    const seconds = i >= 0 ? Number(process.argv[i + 1]) : 3;
    for (const c of await runE2eThroughput({ seconds })) printCase(c);
  }
}
