/**
 * P7: horizontal scaling of a CPU-bound kit endpoint. The kit echo (schema
 * validation both ways + Ed25519 envelope check) runs as 1 then 2 replica
 * processes sharing the micro queue group, same server, same run; the figure
 * is 2-replica throughput ÷ 1-replica throughput (goal >= 1.5).
 *
 * The client pre-signs a pool of requests (the read-only endpoint checks the
 * signature and the ±30 s window, not a nonce), so its own CPU use stays small
 * next to the replicas': on 2 cores the bound is the cores, shared by the two
 * replicas, nats-server and the client.
 *
 *   npx tsx bench/src/scaling.ts [--seconds 3] [--in-flight 64]
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node";
import { decodeReply } from "@unibus/contracts";
import { SigningKey, envelopeToHeaders, signEnvelope } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import { EchoSubject } from "./echo-service.js";
import { parallelRate, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

const serviceScript = fileURLToPath(new URL("./echo-service.ts", import.meta.url));
const POOL = 4_096;

async function startReplica(url: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", serviceScript, "kit"], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, UNIBUS_URL: url } });
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

async function countReplicas(nc: NatsConnection): Promise<number> {
  const inbox = nc.subscribe(`_INBOX.p7.${Date.now()}`);
  nc.publish("$SRV.PING.bench-kit", undefined, { reply: inbox.getSubject() });
  setTimeout(() => inbox.unsubscribe(), 500);
  let n = 0;
  for await (const _ of inbox) n += 1;
  return n;
}

export async function runScaling(opts: { seconds: number; inFlight: number }): Promise<BenchCase[]> {
  const server = await startTestServer({ jetstream: true });
  const children: ChildProcess[] = [];
  try {
    children.push(await startReplica(server.url));
    const nc = await server.connect();
    const pool = presigned(SigningKey.generate());
    const echo = async (i: number): Promise<unknown> => {
      const r = pool[i % POOL]!;
      const msg = await nc.request(EchoSubject.kit, r.body, { timeout: 5000, headers: r.headers });
      // Only the first reply is decoded in full; later ones check the error header (client CPU stays small).
      if (i === 0 || msg.headers?.get("Nats-Service-Error-Code")) return decodeReply(msg);
      return msg.data.length;
    };
    for (let i = 0; i < 500; i++) await echo(i);
    const one = await parallelRate(opts.seconds, opts.inFlight, echo);
    children.push(await startReplica(server.url));
    if ((await countReplicas(nc)) !== 2) throw new Error("P7: the second replica did not join");
    // Warm the new replica (JIT, ajv, key cache) through the queue group.
    await parallelRate(0.5, opts.inFlight, echo);
    const two = await parallelRate(opts.seconds, opts.inFlight, echo);
    return [{ name: `P7 kit echo, 2 replicas vs 1, ${opts.inFlight} in flight`, unit: "req/s", unibus: two, raw: one, goal: ">= 1.5" }];
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await server.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name: string, fallback: number): number => {
    const i = process.argv.indexOf(name);
    return i > 0 ? Number(process.argv[i + 1]) : fallback;
  };
  for (const c of await runScaling({ seconds: arg("--seconds", 3), inFlight: arg("--in-flight", 64) })) printCase(c);
}
