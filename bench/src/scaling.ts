/**
 * P7: horizontal scaling of a CPU-bound kit endpoint. The kit echo (schema
 * validation both ways + Ed25519 envelope check + a fixed amount of CPU work,
 * PBKDF2-SHA256 `--work` iterations, ~0.5 ms at 2,000) runs in 2 replica
 * processes sharing the micro queue group; the second one leaves and rejoins
 * the group (it stays up and warm) so the 1-replica and 2-replica cases run
 * in interleaved slices of the same run (1,2,2,1,1,2,…: drift and neighbours
 * on the machine hit both alike). The figure is 2-replica throughput ÷
 * 1-replica throughput over all slices (goal >= 1.5); the per-pair ratios are
 * printed too, to show the spread.
 *
 * Why the work: a bare echo costs about as much in nats-server and the client
 * as in the replica, so on 2 cores a second replica mostly competes with them.
 * With the endpoint's own CPU dominating, what is measured is the endpoint
 * scaling. `--work 0` measures the bare echo. The client pre-signs a pool of
 * requests (the read-only endpoint checks the signature and the ±30 s window,
 * not a nonce), so its own CPU stays small. Bound on 2 cores: 2 ÷ (1 + the
 * share of a request's CPU spent outside the replica).
 *
 *   npx tsx bench/src/scaling.ts [--seconds 4] [--in-flight 64] [--work 2000] [--pairs 8]
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { Worker } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node";
import { decodeReply } from "@unibus/contracts";
import { SigningKey, envelopeToHeaders, signEnvelope } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import { EchoSubject } from "./echo-service.js";
import { numberArg, parallelRate, percentile, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

const serviceScript = fileURLToPath(new URL("./echo-service.ts", import.meta.url));
const POOL = 4_096;


/** Options of {@link runScaling}. */
export interface ScalingOptions {
  /** Measured seconds per side (1 replica, 2 replicas), split over the slices. */
  seconds: number;
  inFlight: number;
  /** PBKDF2-SHA256 iterations per request in the endpoint (0: bare kit echo). Default 2,000. */
  work?: number;
  /** Slice pairs (each: one 1-replica and one 2-replica slice, order alternating). Default 8. */
  pairs?: number;
}

async function startReplica(url: string, work: number, ctl: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", serviceScript, "kit"], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, UNIBUS_URL: url, UNIBUS_BENCH_WORK: String(work), UNIBUS_BENCH_CTL: ctl },
  });
  const [chunk] = (await once(child.stdout, "data")) as [Buffer];
  if (!chunk.toString().includes("ready")) throw new Error(`kit echo replica did not start: ${chunk.toString()}`);
  return child;
}

/** Signed requests made once, replayed round-robin (valid for the ±30 s window). */
function presigned(key: SigningKey): { body: Uint8Array; headers: MsgHdrs }[] {
  return Array.from({ length: POOL }, (_, i) => {
    const body = new TextEncoder().encode(JSON.stringify({ roomId: "bench-room", text: "hello, bench", seq: i }));
    const h = natsHeaders();
    for (const [k, v] of Object.entries(envelopeToHeaders(signEnvelope(key, EchoSubject.kit, body)))) h.set(k, v);
    return { body, headers: h };
  });
}

/**
 * The machine's own bound, no NATS: the same PBKDF2 work in `threads` worker
 * threads for `seconds`; returns work items per second (the sum over threads).
 * Run inside the same pairs as P7, it says how much 2 "cores" give right now.
 */
async function cpuRate(threads: number, work: number, seconds: number): Promise<number> {
  const code = `
    const { pbkdf2Sync } = require("node:crypto");
    const { parentPort, workerData } = require("node:worker_threads");
    const t0 = performance.now(), end = t0 + workerData.ms;
    let n = 0;
    while (performance.now() < end) { pbkdf2Sync("hello, bench", "bench-room", workerData.work, 32, "sha256"); n++; }
    parentPort.postMessage(n / ((performance.now() - t0) / 1000));`;
  const rates = await Promise.all(
    Array.from({ length: threads }, async () => {
      const w = new Worker(code, { eval: true, workerData: { ms: seconds * 1000, work: Math.max(work, 1) } });
      const [rate] = (await once(w, "message")) as [number];
      await w.terminate();
      return rate;
    }),
  );
  return rates.reduce((a, b) => a + b, 0);
}

async function countReplicas(nc: NatsConnection): Promise<number> {
  const inbox = nc.subscribe(`_INBOX.p7.${Date.now()}.${Math.random().toString(36).slice(2)}`);
  nc.publish("$SRV.PING.bench-kit", undefined, { reply: inbox.getSubject() });
  setTimeout(() => inbox.unsubscribe(), 300);
  let n = 0;
  for await (const _ of inbox) n += 1;
  return n;
}

export async function runScaling(opts: ScalingOptions): Promise<BenchCase[]> {
  const work = opts.work ?? 2_000;
  const pairs = opts.pairs ?? 8;
  const slice = opts.seconds / pairs;
  const server = await startTestServer({ jetstream: true });
  const children: ChildProcess[] = [];
  try {
    const ctl = `bench.p7.ctl.${Date.now()}`;
    children.push(await startReplica(server.url, work, `${ctl}.a`));
    children.push(await startReplica(server.url, work, `${ctl}.b`));
    const signer = SigningKey.generate();
    // Signed requests are answered only on the signer's own inbox.
    const nc = await server.connect({ inboxPrefix: `_INBOX.${signer.principal}` });
    const pool = presigned(signer);
    const echo = async (i: number): Promise<unknown> => {
      const r = pool[i % POOL]!;
      const msg = await nc.request(EchoSubject.kit, r.body, { timeout: 10_000, headers: r.headers });
      // Only the first reply is decoded in full; later ones check the error header (client CPU stays small).
      if (i === 0 || msg.headers?.get("Nats-Service-Error-Code")) return decodeReply(msg);
      return msg.data.length;
    };
    const setReplicas = async (n: 1 | 2): Promise<void> => {
      await nc.request(`${ctl}.b`, n === 2 ? "start" : "stop", { timeout: 5_000 });
      const seen = await countReplicas(nc);
      if (seen !== n) throw new Error(`P7: ${seen} replicas answer PING, expected ${n}`);
    };
    if ((await countReplicas(nc)) !== 2) throw new Error("P7: the second replica did not join");
    // Warm both replicas (JIT, ajv, key cache) through the queue group.
    for (let i = 0; i < 200; i++) await echo(i);
    await parallelRate(1, opts.inFlight, echo);
    const totals = { 1: { n: 0, s: 0 }, 2: { n: 0, s: 0 } };
    const cpu = { 1: 0, 2: 0 };
    const ratios: string[] = [];
    const pairRatios: number[] = [];
    const cpuRatios: number[] = [];
    const ceilingSlice = Math.min(0.5, slice / 2);
    for (let p = 0; p < pairs; p++) {
      const order: (1 | 2)[] = p % 2 === 0 ? [1, 2] : [2, 1];
      const rate: Record<number, number> = {};
      const cpuNow: Record<number, number> = {};
      for (const n of order) {
        await setReplicas(n);
        const r = await parallelRate(slice, opts.inFlight, echo);
        rate[n] = r;
        totals[n].n += r * slice;
        totals[n].s += slice;
        cpuNow[n] = await cpuRate(n, work, ceilingSlice);
        cpu[n] += cpuNow[n] / pairs;
      }
      pairRatios.push(rate[2]! / rate[1]!);
      cpuRatios.push(cpuNow[2]! / cpuNow[1]!);
      ratios.push(`${pairRatios.at(-1)!.toFixed(2)} (${cpuRatios.at(-1)!.toFixed(2)})`);
    }
    const one = totals[1].n / totals[1].s;
    const two = totals[2].n / totals[2].s;
    console.log(`  P7 per-pair ratios, work ${work} (in brackets: the machine's own 2-thread ÷ 1-thread ratio right after): ${ratios.join(" ")}`);
    const bound = cpu[2] / cpu[1];
    console.log(
      `  P7 median per-pair ratio ${percentile(pairRatios, 50).toFixed(2)}; machine bound ${bound.toFixed(2)} (median ${percentile(cpuRatios, 50).toFixed(2)}); ` +
        `P7 reaches ${((two / one / bound) * 100).toFixed(0)} % of the bound`,
    );
    return [
      { name: `P7 kit echo${work > 0 ? ` + ${work} PBKDF2 it.` : ""}, 2 replicas vs 1, ${opts.inFlight} in flight`, unit: "req/s", unibus: two, raw: one, goal: ">= 1.5" },
      // No NATS at all: the ceiling the cores allow in this run (2.0 on two idle cores).
      { name: `P7 bound: same work in 2 threads vs 1, no NATS`, unit: "op/s", unibus: cpu[2], raw: cpu[1] },
    ];
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await server.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const opts = { seconds: numberArg("--seconds", 4), inFlight: numberArg("--in-flight", 64), work: numberArg("--work", 2_000), pairs: numberArg("--pairs", 8) };
  for (const c of await runScaling(opts)) printCase(c);
}
