/**
 * P0: a kit endpoint (size limit, JSON parse, schema validation both ways,
 * Ed25519 envelope check, ±30 s window, and for the mutating case the nonce
 * write to the `nonces` KV bucket) against a raw @nats-io/services echo
 * endpoint, same server, same run. Each service runs in its own process.
 *
 *   npx tsx bench/src/kit-vs-raw.ts [--seconds 3] [--in-flight 64] [--p2]
 *
 * `--p2` runs {@link runSignedBound} instead: the kit ÷ the verify-bound echo.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { decodeReply } from "@unibus/contracts";
import { SigningKey, envelopeToHeaders, signEnvelope } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import { EchoSubject } from "./echo-service.js";
import { numberArg, parallelRate, printCase, sequentialRate } from "./report.js";
import type { BenchCase } from "./report.js";

const serviceScript = fileURLToPath(new URL("./echo-service.ts", import.meta.url));

async function startEchoService(mode: "raw" | "verify" | "kit", url: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [...(process.env.BENCH_PROF ? ["--cpu-prof", "--cpu-prof-dir=/tmp/prof"] : []), "--import", "tsx", serviceScript, mode], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, UNIBUS_URL: url },
  });
  const [chunk] = (await once(child.stdout, "data")) as [Buffer];
  if (!chunk.toString().includes("ready")) throw new Error(`echo service (${mode}) did not start: ${chunk.toString()}`);
  return child;
}

function rawEcho(nc: NatsConnection): (i: number) => Promise<unknown> {
  return async (i) => {
    const body = new TextEncoder().encode(JSON.stringify({ roomId: "bench-room", text: "hello, bench", seq: i }));
    const msg = await nc.request(EchoSubject.raw, body, { timeout: 5000 });
    return msg.json();
  };
}

function kitEcho(nc: NatsConnection, key: SigningKey, subject: string, decode: (msg: Msg) => unknown = decodeReply): (i: number) => Promise<unknown> {
  return async (i) => {
    const body = new TextEncoder().encode(JSON.stringify({ roomId: "bench-room", text: "hello, bench", seq: i }));
    const h = natsHeaders();
    for (const [k, v] of Object.entries(envelopeToHeaders(signEnvelope(key, subject, body)))) h.set(k, v);
    const msg = await nc.request(subject, body, { timeout: 5000, headers: h });
    return decode(msg);
  };
}

/** The verify-bound echo answers the body itself, or a 401 service error when the signature fails. */
function decodeVerified(msg: Msg): unknown {
  if (msg.headers?.hasError === true) throw new Error(`verify echo refused: ${msg.headers.description}`);
  return msg.json();
}

export async function runKitVsRaw(opts: { seconds: number; inFlight: number }): Promise<BenchCase[]> {
  const server = await startTestServer({ jetstream: true });
  const children: ChildProcess[] = [];
  try {
    children.push(await startEchoService("raw", server.url), await startEchoService("kit", server.url));
    const key = SigningKey.generate();
    // Signed requests are answered only on the signer's own inbox.
    const nc = await server.connect({ inboxPrefix: `_INBOX.${key.principal}` });
    const raw = rawEcho(nc);
    const kit = kitEcho(nc, key, EchoSubject.kit);
    const kitMutating = kitEcho(nc, key, EchoSubject.kitMutating);
    // Warm both paths (JIT, ajv, KV bucket, key caches) before measuring.
    for (let i = 0; i < 200; i++) await Promise.all([raw(i), kit(i), kitMutating(i)]);

    const { seconds, inFlight } = opts;
    const cases: BenchCase[] = [];
    const rawSeq = await sequentialRate(seconds, raw);
    cases.push({ name: "P0 kit echo, one at a time", unit: "req/s", unibus: await sequentialRate(seconds, kit), raw: rawSeq });
    cases.push({ name: "P0 kit echo + nonce write, one at a time", unit: "req/s", unibus: await sequentialRate(seconds, kitMutating), raw: rawSeq });
    const rawPar = await parallelRate(seconds, inFlight, raw);
    cases.push({ name: `P0 kit echo, ${inFlight} in flight`, unit: "req/s", unibus: await parallelRate(seconds, inFlight, kit), raw: rawPar, goal: ">= 0.5" });
    cases.push({ name: `P0 kit echo + nonce write, ${inFlight} in flight`, unit: "req/s", unibus: await parallelRate(seconds, inFlight, kitMutating), raw: rawPar });
    return cases;
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await server.stop();
  }
}

const SLICE_S = 0.5;

/**
 * P2: the kit's signed endpoint against the honest limit of any signed
 * endpoint, a raw echo that verifies the one Ed25519 envelope signature
 * (the product keeps a signature per request), and beside it against the
 * bare echo. The three alternate in short slices so they see the same load.
 */
export async function runSignedBound(opts: { seconds: number; inFlight: number }): Promise<BenchCase[]> {
  const server = await startTestServer({ jetstream: true });
  const children: ChildProcess[] = [];
  try {
    children.push(await startEchoService("raw", server.url), await startEchoService("verify", server.url), await startEchoService("kit", server.url));
    const key = SigningKey.generate();
    const nc = await server.connect({ inboxPrefix: `_INBOX.${key.principal}` });
    const ops = [rawEcho(nc), kitEcho(nc, key, EchoSubject.verify, decodeVerified), kitEcho(nc, key, EchoSubject.kit)];
    for (let i = 0; i < 200; i++) await Promise.all(ops.map((op) => op(i)));
    const totals = ops.map(() => ({ n: 0, s: 0 }));
    for (let slice = 0; slice < Math.max(1, Math.round(opts.seconds / SLICE_S)); slice++) {
      for (const [j, op] of ops.entries()) {
        const rate = await parallelRate(SLICE_S, opts.inFlight, op);
        totals[j]!.n += rate * SLICE_S;
        totals[j]!.s += SLICE_S;
      }
    }
    const [bare, verify, kit] = totals.map((t) => t.n / t.s) as [number, number, number];
    return [
      { name: `P2 kit echo ÷ verify-bound echo, ${opts.inFlight} in flight`, unit: "req/s", unibus: kit, raw: verify, goal: ">= 0.8" },
      { name: `P2 kit echo ÷ bare echo, ${opts.inFlight} in flight`, unit: "req/s", unibus: kit, raw: bare, goal: "printed" },
      { name: `P2 verify-bound ÷ bare echo, ${opts.inFlight} in flight`, unit: "req/s", unibus: verify, raw: bare, goal: "printed" },
    ];
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await server.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const run = process.argv.includes("--p2") ? runSignedBound : runKitVsRaw;
  for (const c of await run({ seconds: numberArg("--seconds", 3), inFlight: numberArg("--in-flight", 64) })) printCase(c);
}
