/**
 * P10: what "acknowledged means on disk" costs on a 3-node cluster.
 *
 * - R3 KV put/s with `sync_interval: always` (fsync before every ack, the
 *   cluster default) against the same puts on a cluster with the server
 *   default (fsync every 2 minutes); two clusters side by side, measured in
 *   interleaved slices so machine noise hits both. Printed ratio: always ÷
 *   default.
 *   With 32 puts in flight (throughput: raft batches fsyncs) and with one
 *   (latency: every put waits for its own fsync).
 * - Room publish/s into an R3 room-like stream against an R1 one: 1 KB core
 *   publishes (rooms send no ack), counted once the stream has stored them.
 *   Both with `always`, and R3 `always` (the cluster) against R1 with the
 *   default (a single node). Printed ratio: R3 ÷ R1.
 *
 *   npx tsx bench/src/durability.ts [--seconds 3]
 */
import { fileURLToPath } from "node:url";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { startTestCluster } from "@unibus/testing";
import type { TestCluster } from "@unibus/testing";
import { parallelRate, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

/** Options of {@link runDurability}. */
export interface DurabilityOptions {
  /** Seconds per KV case (split into interleaved slices). Default 3. */
  seconds?: number;
  /** Puts kept in flight. Default 32. */
  inFlight?: number;
  /** Room messages per publish case. Default 5,000. */
  messages?: number;
}

const VALUE = new Uint8Array(256).fill(0x61);
const ROOM_MESSAGE = new Uint8Array(1024).fill(0x62);
const SLICES = 4;

/** Puts/s into an R3 KV bucket over `seconds`, keeping `inFlight` puts outstanding. */
async function kvPutRate(nc: NatsConnection, bucket: string, seconds: number, inFlight: number): Promise<number> {
  const kv = await new Kvm(jetstream(nc)).create(bucket, { replicas: 3, history: 1 });
  return parallelRate(seconds, inFlight, (i) => kv.put(`k${i % 1000}`, VALUE));
}

/**
 * Messages/s a room-like stream with `replicas` stores: `n` 1 KB core
 * publishes (a room publish has no ack), timed until stream info shows all
 * of them stored (bounded at 60 s; what was stored by then counts).
 */
async function roomPublishRate(nc: NatsConnection, replicas: number, n: number): Promise<number> {
  const id = `bench_p10_r${replicas}_${Date.now()}`;
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: `ROOM_${id}`, subjects: [`unibus.room.${id}.>`], num_replicas: replicas });
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    nc.publish(`unibus.room.${id}.m`, ROOM_MESSAGE);
    if (i % 500 === 499) await nc.flush();
  }
  await nc.flush();
  const deadline = start + 60_000;
  let stored = 0;
  while (stored < n && performance.now() < deadline) {
    stored = (await jsm.streams.info(`ROOM_${id}`)).state.messages;
    if (stored < n) await new Promise((r) => setTimeout(r, 20));
  }
  const rate = stored / ((performance.now() - start) / 1000);
  await jsm.streams.delete(`ROOM_${id}`);
  return rate;
}

/** P10: `always` ÷ default for R3 KV puts; R3 ÷ R1 for room publishes. */
export async function runDurability(opts: DurabilityOptions = {}): Promise<BenchCase[]> {
  const seconds = opts.seconds ?? 3;
  const inFlight = opts.inFlight ?? 32;
  const messages = opts.messages ?? 5_000;
  const clusters: TestCluster[] = [];
  try {
    const always = await startTestCluster(3, { name: "p10-always" });
    clusters.push(always);
    // The server default, written out: fsync every 2 minutes, acks before it.
    const lazy = await startTestCluster(3, { name: "p10-default", config: { jetstream: { sync_interval: "2m" } } });
    clusters.push(lazy);
    const [a, d] = [await always.connect({ noRandomize: true }), await lazy.connect({ noRandomize: true })];
    const mean = (xs: number[]): number => xs.reduce((x, y) => x + y, 0) / xs.length;
    const kvCase = async (lanes: number): Promise<BenchCase> => {
      const rates = { always: [] as number[], lazy: [] as number[] };
      for (let s = 0; s < SLICES; s++) {
        rates.always.push(await kvPutRate(a, "p10_always", seconds / SLICES, lanes));
        rates.lazy.push(await kvPutRate(d, "p10_default", seconds / SLICES, lanes));
      }
      return { name: `P10 R3 KV put/s, always ÷ default, ${lanes} in flight`, unit: "put/s", unibus: mean(rates.always), raw: mean(rates.lazy) };
    };
    const kv = [await kvCase(inFlight), await kvCase(1)];
    // R1 then R3 then R1 again, so drift during the run does not favour one.
    const r1a = await roomPublishRate(a, 1, messages);
    const r3 = await roomPublishRate(a, 3, messages);
    const r1b = await roomPublishRate(a, 1, messages);
    const r1Default = await roomPublishRate(d, 1, messages);
    return [
      ...kv,
      { name: "P10 room 1 KB publish/s, R3 ÷ R1, both always", unit: "msg/s", unibus: r3, raw: (r1a + r1b) / 2 },
      { name: "P10 room 1 KB publish/s, R3 always ÷ R1 default", unit: "msg/s", unibus: r3, raw: r1Default },
    ];
  } finally {
    for (const c of clusters) await c.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf("--seconds");
  for (const c of await runDurability({ seconds: i >= 0 ? Number(process.argv[i + 1]) : 3 })) printCase(c);
}
