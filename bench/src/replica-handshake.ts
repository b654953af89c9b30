/**
 * P6: full replica PSK handshakes (hello + finish: two request/reply round
 * trips, BLAKE3 MACs on both sides, an Ed25519 signature and its check, and
 * five JetStream KV operations for the shared single-use state, paired so each message waits on one or two KV round trips) against raw
 * NATS request/reply round trips, same server, same run. Gateway and raw echo
 * each run in their own process.
 *
 *   npx tsx bench/src/replica-handshake.ts [--seconds 3] [--in-flight 16]
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { randomBytes, SigningKey, toHex } from "@unibus/crypto";
import { replicaHandshake } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import { EchoSubject } from "./echo-service.js";
import { numberArg, parallelRate, printCase, sequentialRate } from "./report.js";
import type { BenchCase } from "./report.js";

const here = (f: string): string => fileURLToPath(new URL(f, import.meta.url));

async function startChild(script: string, args: string[], env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", here(script), ...args], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...env } });
  const [chunk] = (await once(child.stdout, "data")) as [Buffer];
  if (!chunk.toString().includes("ready")) throw new Error(`${script} did not start`);
  return child;
}

export async function runReplicaHandshake(opts: { seconds: number; inFlight: number }): Promise<BenchCase[]> {
  const server = await startTestServer({ jetstream: true });
  const children: ChildProcess[] = [];
  const psk = randomBytes(32);
  try {
    // The PSK reaches the gateway through its environment only, as in production.
    children.push(await startChild("./echo-service.ts", ["raw"], { UNIBUS_URL: server.url }));
    children.push(await startChild("./gateway-service.ts", [], { UNIBUS_URL: server.url, UNIBUS_REPLICA_PSK: toHex(psk), UNIBUS_CLUSTER_NAME: "bench", UNIBUS_REPLICA_ID: "gw-bench" }));
    const nc = await server.connect();
    const identity = SigningKey.generate();
    const body = new TextEncoder().encode(JSON.stringify({ roomId: "bench-room", text: "hello, bench" }));
    const raw = async () => (await nc.request(EchoSubject.raw, body, { timeout: 5000 })).data;
    const handshake = (i: number) => replicaHandshake(nc, { clusterName: "bench", replicaId: `node-${i % 1000}`, psk, identity });
    for (let i = 0; i < 100; i++) await Promise.all([raw(), handshake(i)]);

    const cases: BenchCase[] = [];
    const rawSeq = await sequentialRate(opts.seconds, raw);
    cases.push({ name: "P6 full handshakes, one at a time", unit: "op/s", unibus: await sequentialRate(opts.seconds, handshake), raw: rawSeq, goal: ">= 0.3" });
    const rawPar = await parallelRate(opts.seconds, opts.inFlight, raw);
    cases.push({ name: `P6 full handshakes, ${opts.inFlight} in flight`, unit: "op/s", unibus: await parallelRate(opts.seconds, opts.inFlight, handshake), raw: rawPar, goal: ">= 0.3" });
    await nc.close();
    return cases;
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await server.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const c of await runReplicaHandshake({ seconds: numberArg("--seconds", 3), inFlight: numberArg("--in-flight", 16) })) printCase(c);
}
