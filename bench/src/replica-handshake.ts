/**
 * P6: full replica PSK handshakes (hello + finish: two request/reply round
 * trips, BLAKE3 MACs on both sides, an Ed25519 signature and its check, and
 * the one create-only JetStream KV write of the session that is also the
 * single-use check) against raw NATS request/reply round trips, same server,
 * same run, in interleaved slices so the shared machine's noise hits both.
 * Gateway and raw echo each run in their own process.
 *
 *   npx tsx bench/src/replica-handshake.ts [--seconds 3] [--in-flight 16] [--cpu-prof-dir DIR]
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { randomBytes, SigningKey, toHex } from "@unibus/crypto";
import { replicaHandshake } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import { EchoSubject } from "./echo-service.js";
import { GATEWAY_CPU_SUBJECT } from "./gateway-service.js";
import { numberArg, parallelRate, printCase, sequentialRate } from "./report.js";
import type { BenchCase } from "./report.js";

const here = (f: string): string => fileURLToPath(new URL(f, import.meta.url));

/** Slice length: short enough that load swings on a shared box land on both sides. */
const SLICE_S = 0.5;

/** Mean rates of `a` and `b`, measured in alternating slices of {@link SLICE_S} for `seconds` each; `around` wraps each slice of `b`. */
async function interleaved(
  seconds: number,
  measure: (s: number, op: (i: number) => Promise<unknown>) => Promise<number>,
  a: (i: number) => Promise<unknown>,
  b: (i: number) => Promise<unknown>,
  around: (slice: () => Promise<number>) => Promise<number> = (slice) => slice(),
): Promise<[number, number]> {
  const slices = Math.max(1, Math.round(seconds / SLICE_S));
  let ra = 0;
  let rb = 0;
  for (let k = 0; k < slices; k++) {
    ra += await measure(SLICE_S, a);
    rb += await around(() => measure(SLICE_S, b));
  }
  return [ra / slices, rb / slices];
}

async function startChild(script: string, args: string[], env: NodeJS.ProcessEnv, nodeFlags: string[] = []): Promise<ChildProcess> {
  const child = spawn(process.execPath, [...nodeFlags, "--import", "tsx", here(script), ...args], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...env } });
  const [chunk] = (await once(child.stdout, "data")) as [Buffer];
  if (!chunk.toString().includes("ready")) throw new Error(`${script} did not start`);
  return child;
}

/** `cpuProfileDir`: the gateway runs under `node --cpu-prof` and writes its profile there when it stops. */
export async function runReplicaHandshake(opts: { seconds: number; inFlight: number; cpuProfileDir?: string }): Promise<BenchCase[]> {
  const server = await startTestServer({ jetstream: true });
  const children: ChildProcess[] = [];
  const psk = randomBytes(32);
  try {
    // The PSK reaches the gateway through its environment only, as in production.
    children.push(await startChild("./echo-service.ts", ["raw"], { UNIBUS_URL: server.url }));
    children.push(await startChild("./gateway-service.ts", [], { UNIBUS_URL: server.url, UNIBUS_REPLICA_PSK: toHex(psk), UNIBUS_CLUSTER_NAME: "bench", UNIBUS_REPLICA_ID: "gw-bench" }, opts.cpuProfileDir === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", opts.cpuProfileDir]));
    const nc = await server.connect();
    const identity = SigningKey.generate();
    const body = new TextEncoder().encode(JSON.stringify({ roomId: "bench-room", text: "hello, bench" }));
    const raw = async () => (await nc.request(EchoSubject.raw, body, { timeout: 5000 })).data;
    const handshake = (i: number) => replicaHandshake(nc, { clusterName: "bench", replicaId: `node-${i % 1000}`, psk, identity });
    for (let i = 0; i < 100; i++) await Promise.all([raw(), handshake(i)]);

    // The gateway's CPU time per handshake, read from the gateway around each
    // handshake slice: steadier than rates on a shared box, where waiting for
    // a core dominates the wall clock.
    let done = 0;
    let cpuMicros = 0;
    const counted = async (i: number) => {
      await handshake(i);
      done++;
    };
    const gatewayCpu = async () => Number(new TextDecoder().decode((await nc.request(GATEWAY_CPU_SUBJECT, undefined, { timeout: 5000 })).data));
    const withCpu = async (slice: () => Promise<number>) => {
      const before = await gatewayCpu();
      const rate = await slice();
      cpuMicros += (await gatewayCpu()) - before;
      return rate;
    };
    const perHandshake = () => {
      const r = Math.round(cpuMicros / Math.max(1, done));
      done = 0;
      cpuMicros = 0;
      return r;
    };

    const cases: BenchCase[] = [];
    const [rawSeq, hsSeq] = await interleaved(opts.seconds, sequentialRate, raw, counted, withCpu);
    const cpuSeq = perHandshake();
    cases.push({ name: "P6 full handshakes, one at a time", unit: "op/s", unibus: hsSeq, raw: rawSeq, goal: ">= 0.3" });
    const par = (s: number, op: (i: number) => Promise<unknown>) => parallelRate(s, opts.inFlight, op);
    const [rawPar, hsPar] = await interleaved(opts.seconds, par, raw, counted, withCpu);
    cases.push({ name: `P6 full handshakes, ${opts.inFlight} in flight`, unit: "op/s", unibus: hsPar, raw: rawPar, goal: ">= 0.3" });
    console.log(`P6 gateway CPU per handshake: ${cpuSeq} µs one at a time, ${perHandshake()} µs with ${opts.inFlight} in flight`);
    await nc.close();
    return cases;
  } finally {
    // Waits for the children to exit (bounded), so a CPU profile is written before the bench moves on.
    await Promise.all(
      children.map(async (c) => {
        if (c.exitCode !== null) return;
        const exited = once(c, "exit");
        c.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000).unref())]);
      }),
    );
    await server.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const profileAt = process.argv.indexOf("--cpu-prof-dir");
  const cpuProfileDir = profileAt > 0 ? process.argv[profileAt + 1] : undefined;
  for (const c of await runReplicaHandshake({ seconds: numberArg("--seconds", 3), inFlight: numberArg("--in-flight", 16), ...(cpuProfileDir === undefined ? {} : { cpuProfileDir }) })) printCase(c);
}
