/**
 * P8: idle-room latency. One 1 KB message at a time through an E2E room
 * (SDK encrypt + sign → server → SDK verify + decrypt, publisher and
 * subscriber on their own connections), from `publish` to the authenticated
 * message in the subscriber's hands; against a raw NATS publish of the same
 * payload to a plain subscriber on the same two connections. Samples are
 * interleaved (one raw, one room) with a short pause between, so the room is
 * idle for each. Goal: room p99 < 1 ms on a quiet machine. It also prints
 * the garbage collections of the measured loop per 1,000 samples and how
 * many of the slowest 1% of room samples a GC pause overlapped: a scavenge
 * of a few ms is a tail sample by itself, so allocation on the room path
 * shows up in p99.
 *
 * `--breakdown` runs a second pass that splits each room sample in three:
 * the sender (from `publish` until it returns: a message into an idle room
 * is sealed, signed and handed to the connection inside the call), the
 * way to the subscriber's connection (a plain subscription on the room's
 * subject, made before the room's, sees the frame first), and the receiver
 * (verify, decrypt, deliver). That pass sends every frame to the
 * subscriber's connection twice, so its totals are not the P8 figures.
 *
 *   npx tsx bench/src/idle-latency.ts [--samples 2000] [--warmup 1000] [--breakdown]
 */
import { constants, PerformanceObserver } from "node:perf_hooks";
import type { PerformanceEntry } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { SigningKey, randomBytes } from "@unibus/crypto";
import { StaticRoomKeys, connect } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import { numberArg, percentile, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

const ROOM = "bench8";
const RAW_SUBJECT = "bench.raw.p8";
const PAYLOAD_BYTES = 1024;
/**
 * Unmeasured samples first (room and raw alike). With 50, the slowest 1% of
 * room samples sat at the start of the run, V8 still compiling the room
 * path (p99 1.07-1.73 ms against 0.63-0.75 ms with 1,000, five runs each
 * alternated at load 0.4-1.1): a long-lived client's steady state is what P8 asks.
 */
const DEFAULT_WARMUP = 1_000;

/** P8: room and raw p50/p99 one-way delivery latency of single messages on an idle connection. */
export async function runIdleLatency(opts: { samples: number; warmup?: number; breakdown?: boolean }): Promise<BenchCase[]> {
  const warmup = opts.warmup ?? DEFAULT_WARMUP;
  if (opts.breakdown === true) await printBreakdown(opts.samples, warmup);
  const { server, keys, a, b } = await roomPair();
  const room = a.room(ROOM, keys, { liveOnly: true });
  const sub = b.room(ROOM, keys, { liveOnly: true }).subscribe();
  const it = sub[Symbol.asyncIterator]();
  let rawArrived: (() => void) | undefined;
  b.nc.subscribe(RAW_SUBJECT, { callback: () => rawArrived?.() });
  await b.nc.flush();
  const payload = randomBytes(PAYLOAD_BYTES);
  // Preallocated: samples kept in growing arrays would be the bench's own survivors in every scavenge it counts.
  const rawLat = new Float64Array(opts.samples);
  const roomLat = new Float64Array(opts.samples);
  /** Start of each measured room sample, for the GC overlap count. */
  const roomStart = new Float64Array(opts.samples);
  const gcs: PerformanceEntry[] = [];
  const gcObserver = new PerformanceObserver((list) => void gcs.push(...list.getEntries()));
  gcObserver.observe({ entryTypes: ["gc"] });
  let measuredFrom = Infinity;
  let measuredTo = 0;
  try {
    for (let i = 0; i < opts.samples + warmup; i++) {
      if (i === warmup) measuredFrom = performance.now();
      const arrived = new Promise<void>((resolve) => (rawArrived = resolve));
      let t0 = performance.now();
      a.nc.publish(RAW_SUBJECT, payload);
      await arrived;
      const raw = performance.now() - t0;
      await new Promise((r) => setTimeout(r, 1));
      t0 = performance.now();
      void room.publish(payload);
      const m = await it.next();
      const t1 = performance.now();
      const e2e = t1 - t0;
      if (m.done === true || m.value.data.byteLength !== PAYLOAD_BYTES) throw new Error("bench room message did not arrive intact");
      if (i >= warmup) {
        rawLat[i - warmup] = raw;
        roomLat[i - warmup] = e2e;
        roomStart[i - warmup] = t0;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    measuredTo = performance.now();
  } finally {
    // Entries reach the callback asynchronously: the ones not yet delivered are taken here.
    gcs.push(...gcObserver.takeRecords());
    gcObserver.disconnect();
    sub.stop();
    await a.close();
    await b.close();
    await server.stop();
  }
  const roomMs = Array.from(roomLat);
  const rawMs = Array.from(rawLat);
  const p = (xs: number[], q: number): string => percentile(xs, q).toFixed(3);
  console.log(`P8 idle-room latency, 1 KB, ${opts.samples} samples: room p50 ${p(roomMs, 50)} ms, p99 ${p(roomMs, 99)} ms; raw p50 ${p(rawMs, 50)} ms, p99 ${p(rawMs, 99)} ms`);
  console.log(`P8 ${gcSummary(gcs, measuredFrom, measuredTo, roomMs, Array.from(roomStart))}`);
  // Where in the run the slowest 1% fell: bunched at the start means the warm-up was too short.
  const cut = percentile(roomMs, 99);
  const quarters = [0, 0, 0, 0];
  roomMs.forEach((ms, i) => {
    if (ms >= cut) quarters[Math.min(3, Math.floor((4 * i) / roomMs.length))]! += 1;
  });
  console.log(`P8 room samples at or above p99 by quarter of the measured run (after ${warmup} warm-up samples): ${quarters.join(", ")}`);
  return [
    { name: "P8 idle-room latency p50", unit: "ms", unibus: percentile(roomMs, 50), raw: percentile(rawMs, 50), lowerIsBetter: true, goal: "printed" },
    { name: "P8 idle-room latency p99", unit: "ms", unibus: percentile(roomMs, 99), raw: percentile(rawMs, 99), lowerIsBetter: true, goal: "room p99 < 1 ms (quiet machine)" },
  ];
}

/** A server without JetStream, a room key, and the publisher's and the subscriber's connections. */
async function roomPair() {
  const server = await startTestServer({ jetstream: false });
  const keys = new StaticRoomKeys().set(ROOM, 0, randomBytes(32));
  const a = await connect({ url: server.url, identity: SigningKey.generate() });
  const b = await connect({ url: server.url, identity: SigningKey.generate() });
  return { server, keys, a, b };
}

/** The `--breakdown` pass: where a lone room message's time goes (see the header). */
async function printBreakdown(samples: number, warmup: number): Promise<void> {
  const { server, keys, a, b } = await roomPair();
  try {
    const room = a.room(ROOM, keys, { liveOnly: true });
    let arrived = 0;
    // Before the room's own subscription, so this callback runs first for each frame.
    b.nc.subscribe(room.subject, { callback: () => void (arrived = performance.now()) });
    const sub = b.room(ROOM, keys, { liveOnly: true }).subscribe();
    const it = sub[Symbol.asyncIterator]();
    await b.nc.flush();
    const payload = randomBytes(PAYLOAD_BYTES);
    const parts = { sender: new Float64Array(samples), wire: new Float64Array(samples), receiver: new Float64Array(samples) };
    for (let i = 0; i < samples + warmup; i++) {
      await new Promise((r) => setTimeout(r, 1));
      const t0 = performance.now();
      void room.publish(payload);
      const sent = performance.now();
      await it.next();
      const done = performance.now();
      if (i < warmup) continue;
      parts.sender[i - warmup] = sent - t0;
      parts.wire[i - warmup] = arrived - sent;
      parts.receiver[i - warmup] = done - arrived;
    }
    sub.stop();
    const f = (xs: Float64Array): string => {
      const ms = Array.from(xs);
      return `p50 ${(percentile(ms, 50) * 1000).toFixed(0)} µs, p99 ${(percentile(ms, 99) * 1000).toFixed(0)} µs`;
    };
    console.log(`P8 breakdown (${samples} samples, each frame sent to the subscriber's connection twice): sender (seal, sign, hand over) ${f(parts.sender)}; to the subscriber's connection ${f(parts.wire)}; receiver (verify, decrypt, deliver) ${f(parts.receiver)}`);
    // The same hop for raw publishes, alternately right after the 1 ms pause
    // and after busy-waiting as long as the room's sender computed (p50):
    // whether computing before the write, not the frame, makes the hop's tail.
    const spinMs = percentile(Array.from(parts.sender), 50);
    let rawArrived: (() => void) | undefined;
    b.nc.subscribe(RAW_SUBJECT, { callback: () => rawArrived?.() });
    await b.nc.flush();
    const hops = { now: new Float64Array(samples), spun: new Float64Array(samples) };
    for (let i = 0; i < 2 * (samples + warmup); i++) {
      await new Promise((r) => setTimeout(r, 1));
      const spun = i % 2 === 1;
      const t0 = performance.now();
      while (spun && performance.now() - t0 < spinMs) {
        // stands in for the sender's sealing and signing
      }
      const arrived = new Promise<void>((resolve) => (rawArrived = resolve));
      const sent = performance.now();
      a.nc.publish(RAW_SUBJECT, payload);
      await arrived;
      const k = (i >> 1) - warmup;
      if (k >= 0) (spun ? hops.spun : hops.now)[k] = performance.now() - sent;
    }
    console.log(`P8 breakdown, raw publishes' hop: right after the pause ${f(hops.now)}; after ${(spinMs * 1000).toFixed(0)} µs of busy work, as the room's sender ${f(hops.spun)}`);
  } finally {
    await a.close();
    await b.close();
    await server.stop();
  }
}

/**
 * GCs whose pause began inside the measured loop, per 1,000 samples (each
 * sample is one raw and one room message), and how many of the slowest 1% of
 * room samples overlapped a GC pause.
 */
function gcSummary(gcs: readonly PerformanceEntry[], from: number, to: number, roomLat: readonly number[], roomStart: readonly number[]): string {
  const inLoop = gcs.filter((g) => g.startTime >= from && g.startTime <= to);
  // The GC kind is on the entry's detail (Node ≥ 16), which the PerformanceEntry type does not declare.
  const kind = (g: PerformanceEntry): number | undefined => ((g as { detail?: unknown }).detail as { kind?: number } | undefined)?.kind;
  const minor = inLoop.filter((g) => kind(g) === constants.NODE_PERFORMANCE_GC_MINOR);
  const major = inLoop.filter((g) => kind(g) === constants.NODE_PERFORMANCE_GC_MAJOR);
  const per1k = (n: number): string => ((n * 1000) / Math.max(1, roomLat.length)).toFixed(1);
  const longest = minor.reduce((m, g) => Math.max(m, g.duration), 0);
  const cut = percentile(roomLat, 99);
  const slow = roomStart.map((a, i): [number, number] => [a, a + roomLat[i]!]).filter((_, i) => roomLat[i]! >= cut);
  const hit = slow.filter(([a, b]) => inLoop.some((g) => g.startTime < b && g.startTime + g.duration > a)).length;
  return `GC in the measured loop: ${minor.length} scavenges (${per1k(minor.length)} per 1,000 samples, longest ${longest.toFixed(1)} ms), ${major.length} mark-compacts; ${hit} of the ${slow.length} room samples at or above p99 overlapped a GC pause`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const c of await runIdleLatency({ samples: numberArg("--samples", 2_000), warmup: numberArg("--warmup", DEFAULT_WARMUP), breakdown: process.argv.includes("--breakdown") })) printCase(c);
}
