/**
 * P9: blob upload and download MB/s of a 64 MiB file through the real blobs
 * service and the SDK (client-side XChaCha20-Poly1305 per chunk, signed chunk
 * requests, the service's SHA-256 and size checks, the client's per-chunk
 * authentication and hash check) against raw JetStream Object Store
 * `put`/`getBlob` of the same bytes, same server, same run, interleaved;
 * raw twice, with the object store's default pure-JavaScript SHA-256 (the
 * goal's baseline) and with node:crypto's (printed beside it).
 * The service runs in its own process, as deployed; the raw store calls and
 * the SDK run in this one.
 * MB/s counts plaintext bytes on both sides. Goal: ≥ 0.5 each way.
 *
 *   npx tsx bench/src/blobs.ts [--mib 64] [--rounds 2] [--in-flight N]
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm, setSha256Backend } from "@nats-io/obj";
import { MEMBERS_BUCKET } from "@unibus/blobs";
import { SigningKey, randomBytes } from "@unibus/crypto";
import { connect, getBlob, putBlob } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import { numberArg, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

const ROOM = "benchroom9";

/** Options of {@link runBlobs}. */
export interface BlobsBenchOptions {
  /** Plaintext size in MiB. Default 64. */
  mib?: number;
  /** Interleaved rounds (each: one SDK put+get, one raw put+get); the median-free mean is reported. Default 2. */
  rounds?: number;
  /** The SDK's chunk requests in flight; default the SDK's own (about 4 MiB). */
  inFlight?: number;
}

/** P9: SDK blob put/get MB/s ÷ raw Object Store put/get MB/s. */
export async function runBlobs(opts: BlobsBenchOptions = {}): Promise<BenchCase[]> {
  const bytes = (opts.mib ?? 64) * 1024 * 1024;
  const rounds = opts.rounds ?? 2;
  const server = await startTestServer({ jetstream: true });
  const nc = await server.connect();
  const owner = SigningKey.generate();
  const members = await new Kvm(jetstream(nc)).create(MEMBERS_BUCKET);
  // A complete record, as membership writes it: readers check it against its stored-data schema.
  await members.put(`${ROOM}.${owner.principal}`, JSON.stringify({ roomId: ROOM, principal: owner.principal, role: "owner", addedAt: new Date(0).toISOString(), addedBy: owner.principal }));
  // Room for the 16-byte tag per 64 KiB chunk on top of the plaintext.
  const service = spawn(process.execPath, ["--import", "tsx", fileURLToPath(new URL("./blobs-service.ts", import.meta.url))], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, UNIBUS_URL: server.url, UNIBUS_BLOBS_MAX_BYTES: String(bytes + 1024 * 1024) },
  });
  const [ready] = (await once(service.stdout, "data")) as [Buffer];
  if (!ready.toString().includes("ready")) throw new Error("blobs service did not start");
  const client = await connect({ url: server.url, identity: owner, requestTimeoutMs: 30_000 });
  const rawStore = await new Objm(jetstream(nc)).create("bench_p9_raw", { storage: "file" });
  const mb = bytes / 1e6;
  const put = { unibus: 0, raw: 0, native: 0 };
  const get = { unibus: 0, raw: 0, native: 0 };
  try {
    for (let r = 0; r < rounds; r++) {
      // Fresh bytes each round: a repeated upload would be answered as already stored.
      const data = randomBytes(bytes);
      let t0 = performance.now();
      const stored = await putBlob(client, ROOM, data, opts.inFlight === undefined ? {} : { inFlight: opts.inFlight });
      put.unibus += mb / ((performance.now() - t0) / 1000);
      t0 = performance.now();
      const back = await getBlob(client, ROOM, stored.blobId, stored.key, opts.inFlight === undefined ? {} : { inFlight: opts.inFlight });
      get.unibus += mb / ((performance.now() - t0) / 1000);
      if (back.byteLength !== bytes) throw new Error("bench blob came back with the wrong size");

      // Raw twice: with the object store's default SHA-256 (pure JavaScript,
      // what the goal is measured against) and with node:crypto's, which the
      // blobs service selects; the setting is process-wide, and only the raw
      // calls use the object store in this process.
      for (const backend of ["js", "native"] as const) {
        setSha256Backend(backend);
        const name = `raw${r}${backend}`;
        t0 = performance.now();
        await rawStore.putBlob({ name }, data);
        const up = mb / ((performance.now() - t0) / 1000);
        t0 = performance.now();
        const rawBack = await rawStore.getBlob(name);
        const down = mb / ((performance.now() - t0) / 1000);
        if (rawBack?.byteLength !== bytes) throw new Error("raw object came back with the wrong size");
        await rawStore.delete(name);
        if (backend === "js") {
          put.raw += up;
          get.raw += down;
        } else {
          put.native += up;
          get.native += down;
        }
      }
    }
    const goal = ">= 0.5";
    const mib = opts.mib ?? 64;
    return [
      { name: `P9 blob upload ${mib} MiB (mean of ${rounds})`, unit: "MB/s", unibus: put.unibus / rounds, raw: put.raw / rounds, goal },
      { name: `P9 blob download ${mib} MiB (mean of ${rounds})`, unit: "MB/s", unibus: get.unibus / rounds, raw: get.raw / rounds, goal },
      { name: `P9 upload vs raw with node:crypto SHA-256`, unit: "MB/s", unibus: put.unibus / rounds, raw: put.native / rounds, goal: "printed" },
      { name: `P9 download vs raw with node:crypto SHA-256`, unit: "MB/s", unibus: get.unibus / rounds, raw: get.native / rounds, goal: "printed" },
    ];
  } finally {
    await client.close();
    service.kill("SIGTERM");
    await once(service, "exit");
    await nc.close();
    await server.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const c of await runBlobs({ mib: numberArg("--mib", 64), rounds: numberArg("--rounds", 2), ...(process.argv.includes("--in-flight") ? { inFlight: numberArg("--in-flight", 4) } : {}) })) printCase(c);
}
