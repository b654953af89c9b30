/**
 * P13: retry storms cost nothing. 200 revoked clients reconnect in a tight
 * loop (no SDK backoff: the worst a leaked client can do) from their own
 * process while a legitimate client connects and closes, `concurrency` at a
 * time; the legitimate connects/s with the storm running is compared with
 * the same without it, in interleaved slices. The callout runs in a child
 * process as in production, with its default denial cache and audit trail.
 *
 * Second case: callout CPU per refusal answered from the denial cache (xkey
 * open, request JWT check, signed and sealed error response), against a
 * refusal that is fully checked (nonce signature verified, directory read
 * from memory), in this process.
 *
 *   npx tsx bench/src/retry-storm.ts [--seconds 3] [--storm 200]
 *
 * `BENCH_LEADER_READS=1`: the callout reads the directory from the stream
 * leaders per login (the previous design) instead of its fenced watched copy.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { jetstreamManager } from "@nats-io/jetstream";
import { AuditDenialStream } from "@unibus/contracts";
import { NkeyPrefix, SigningKey, encodeNkeySeed, nkeyAuthenticator, randomBytes, signingBackend } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { CalloutXkey, DenialCache, PermissionCache, encodeJwt, handleCalloutRequest } from "@unibus/auth-callout";
import { calloutServerConfig, servicePermissions } from "@unibus/kit";
import type { CalloutContext, DirectoryEntry, PrincipalDirectory } from "@unibus/auth-callout";
import { startCalloutWorker } from "./callout-connects.js";
import { numberArg, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

/** Options of {@link runRetryStorm}. */
export interface RetryStormOptions {
  /** Measured seconds per side (with and without the storm). */
  seconds: number;
  /** Revoked clients hammering. */
  stormClients?: number;
  /** Legitimate connects in flight. */
  concurrency?: number;
}

interface StormInput {
  url: string;
  seeds: string[];
}

/** Child mode: one tight reconnect loop per revoked key while switched on ("on"/"off" lines on stdin). */
async function runStormWorker(): Promise<void> {
  const lines = createInterface({ input: process.stdin });
  const it = lines[Symbol.asyncIterator]();
  const first = await it.next();
  const input = JSON.parse(String(first.value)) as StormInput;
  const keys = input.seeds.map((s) => SigningKey.fromNkeySeed(s));
  let on = false;
  let attempts = 0;
  // Attempts before the last "mark" (the warm-up) are not reported.
  let base = 0;
  // Every loop waits on the same gate while the storm is off.
  let openGate: () => void = () => undefined;
  let gate = new Promise<void>((r) => (openGate = r));
  const loop = async (key: SigningKey): Promise<void> => {
    const opts = { servers: input.url, authenticator: nkeyAuthenticator(key), inboxPrefix: `_INBOX.${key.principal}`, reconnect: false, timeout: 10_000 };
    for (;;) {
      while (!on) await gate;
      attempts++;
      const nc = await connect(opts).catch(() => null);
      if (nc !== null) throw new Error(`revoked ${key.principal} was admitted`);
    }
  };
  for (const k of keys) {
    loop(k).catch((err: unknown) => {
      process.stderr.write(`storm worker: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    });
  }
  process.stdout.write("ready\n");
  for (;;) {
    const next = await it.next();
    const cmd = next.done === true ? "exit" : String(next.value).trim();
    if (cmd === "on" && !on) {
      on = true;
      openGate();
    } else if (cmd === "off" && on) {
      on = false;
      gate = new Promise<void>((r) => (openGate = r));
    } else if (cmd === "mark") {
      base = attempts;
    } else if (cmd !== "on" && cmd !== "off") {
      process.stdout.write(`attempts ${attempts - base}\n`);
      process.exit(0);
    }
  }
}

async function startStorm(input: StormInput): Promise<{ child: ChildProcess; set(on: boolean): void; mark(): void; stop(): Promise<number> }> {
  const self = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, ["--import", "tsx", self, "storm-worker"], { stdio: ["pipe", "pipe", "inherit"] });
  child.stdin?.write(`${JSON.stringify(input)}\n`);
  const out = createInterface({ input: child.stdout ?? process.stdin })[Symbol.asyncIterator]();
  const ready = await out.next();
  if (String(ready.value) !== "ready") throw new Error(`storm worker failed: ${String(ready.value)}`);
  return {
    child,
    set(on) {
      child.stdin?.write(on ? "on\n" : "off\n");
    },
    mark() {
      child.stdin?.write("mark\n");
    },
    async stop() {
      child.stdin?.end();
      const last = await out.next();
      return Number(/attempts (\d+)/.exec(String(last.value))?.[1] ?? 0);
    },
  };
}

/** Legitimate connect+close cycles, `concurrency` at a time, for `seconds`. */
async function legitRate(url: string, key: SigningKey, seconds: number, concurrency: number): Promise<{ count: number; refused: number; elapsed: number }> {
  const opts = { servers: url, authenticator: nkeyAuthenticator(key), inboxPrefix: `_INBOX.${key.principal}`, reconnect: false, timeout: 10_000 };
  const start = performance.now();
  const deadline = start + seconds * 1000;
  let count = 0;
  let refused = 0;
  const lane = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const nc = await connect(opts).catch(() => null);
      if (nc === null) {
        refused++;
        continue;
      }
      count++;
      await nc.close();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return { count, refused, elapsed: (performance.now() - start) / 1000 };
}

const SLICE_S = 0.5;
const STORM_RAMP_MS = 300;
// The callout's back-off climbs 0, 50, 100 ... 1,000 ms per principal (~2.6 s
// of attempts): the case measures a storm that is going on, not its first seconds.
const STORM_WARMUP_MS = 3_000;

const userRecord = (principal: string, status: "active" | "revoked"): string =>
  // As membership stores it: the callout refuses any other shape as damaged.
  JSON.stringify({ principal, handle: "bench", role: "member", status, addedAt: new Date().toISOString(), addedBy: principal });

/** Legitimate connects/s with and without `stormClients` revoked clients hammering the same server. */
async function stormCase(args: Required<RetryStormOptions>): Promise<BenchCase> {
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const calloutUser = SigningKey.generate();
  const membership = SigningKey.generate();
  const legit = SigningKey.generate();
  const revoked = Array.from({ length: args.stormClients }, () => SigningKey.generate());
  const xkey = CalloutXkey.generate();
  let server: TestServer | undefined;
  let callout: ChildProcess | undefined;
  let storm: Awaited<ReturnType<typeof startStorm>> | undefined;
  try {
    server = await startTestServer({
      config: calloutServerConfig({
        issuerAccountPublic: issuer.principal,
        calloutUserPublic: calloutUser.principal,
        xkeyPublic: xkey.publicKey,
        serviceUsers: [
          {
            service: "membership",
            nkey: membership.principal,
            permissions: servicePermissions({ service: "membership", kvBuckets: ["users", "rooms_by_member"], publish: [`$JS.API.STREAM.CREATE.${AuditDenialStream.name}`] }),
          },
        ],
      }),
    });
    const admin = await server.connect({ authenticator: nkeyAuthenticator(membership), inboxPrefix: `_INBOX.${membership.principal}` });
    const kvm = new Kvm(admin);
    const users = await kvm.create("users", { allow_direct: false });
    await kvm.create("rooms_by_member", { allow_direct: false });
    // As membership creates it: every refusal the callout records lands here.
    await (await jetstreamManager(admin)).streams.add({
      name: AuditDenialStream.name,
      subjects: [`${AuditDenialStream.subjectPrefix}.>`],
      max_msgs: AuditDenialStream.maxMsgs,
      max_bytes: AuditDenialStream.maxBytes,
    });
    await users.put(legit.principal, userRecord(legit.principal, "active"));
    for (const k of revoked) await users.put(k.principal, userRecord(k.principal, "revoked"));
    callout = await startCalloutWorker({ url: server.url, calloutSeed: calloutUser.nkeySeed(), issuerSeed: issuer.nkeySeed(), xkeySeed: xkey.seed(), ...(process.env["BENCH_LEADER_READS"] !== undefined ? { leaderReads: true } : {}) });
    storm = await startStorm({ url: server.url, seeds: revoked.map((k) => k.nkeySeed()) });

    await legitRate(server.url, legit, 0.5, 1); // warm-up
    storm.set(true);
    await new Promise((r) => setTimeout(r, STORM_WARMUP_MS));
    storm.set(false);
    storm.mark();
    const quiet = { count: 0, refused: 0, elapsed: 0 };
    const stormy = { count: 0, refused: 0, elapsed: 0 };
    for (let i = 0; i < Math.max(1, Math.round(args.seconds / SLICE_S)); i++) {
      storm.set(false);
      const q = await legitRate(server.url, legit, SLICE_S, args.concurrency);
      storm.set(true);
      await new Promise((r) => setTimeout(r, STORM_RAMP_MS));
      const s = await legitRate(server.url, legit, SLICE_S, args.concurrency);
      quiet.count += q.count;
      quiet.refused += q.refused;
      quiet.elapsed += q.elapsed;
      stormy.count += s.count;
      stormy.refused += s.refused;
      stormy.elapsed += s.elapsed;
    }
    storm.set(false);
    const attempts = await storm.stop();
    storm = undefined;
    const stormSeconds = stormy.elapsed + (STORM_RAMP_MS / 1000) * Math.max(1, Math.round(args.seconds / SLICE_S));
    return {
      // A legitimate login refused (the callout answered too late for the server) counts as no connect.
      name: `P13 legit connects, ${args.stormClients} revoked retrying (${Math.round(attempts / stormSeconds)} tries/s, ${stormy.refused + quiet.refused} legit refused)`,
      unit: "conn/s",
      unibus: stormy.count / stormy.elapsed,
      raw: quiet.count / quiet.elapsed,
      goal: ">= 0.8",
    };
  } finally {
    if (storm !== undefined) await storm.stop().catch(() => 0);
    callout?.stdin?.end();
    if (callout !== undefined && callout.exitCode === null) await Promise.race([once(callout, "exit"), new Promise((r) => setTimeout(r, 2000))]);
    if (callout !== undefined && callout.exitCode === null) callout.kill();
    await server?.stop();
  }
}

/** An in-memory directory: the CPU case measures the callout, not the network. */
class MemoryDirectory implements PrincipalDirectory {
  constructor(private readonly entries: Map<string, DirectoryEntry>) {}
  lookup(principal: string): Promise<DirectoryEntry | null> {
    return Promise.resolve(this.entries.get(principal) ?? null);
  }
}

/** A genuine encrypted authorization request from `client`, as nats-server sends it. */
function authRequest(serverKey: SigningKey, serverXkey: CalloutXkey, calloutXkey: CalloutXkey, client: SigningKey): Uint8Array {
  const nonce = Buffer.from(randomBytes(16)).toString("base64url");
  const userNkey = SigningKey.generate().principal;
  const token = encodeJwt(
    {
      sub: userNkey,
      aud: "nats-authorization-request",
      nats: {
        server_id: { name: "bench", host: "127.0.0.1", id: serverKey.principal, xkey: serverXkey.publicKey },
        user_nkey: userNkey,
        client_info: { host: "127.0.0.1", id: 1, nonce, kind: "Client", type: "nats" },
        connect_opts: { nkey: client.principal, sig: Buffer.from(client.sign(Buffer.from(nonce))).toString("base64") },
        type: "authorization_request",
        version: 2,
      },
    },
    serverKey,
    NkeyPrefix.server,
  );
  return serverXkey.seal(Buffer.from(token), calloutXkey.publicKey);
}

/** Callout CPU µs per refusal: answered from the denial cache vs fully checked. */
async function cpuCase(iterations: number): Promise<BenchCase> {
  const serverKey = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.server, randomBytes(32)));
  const serverXkey = CalloutXkey.generate();
  const calloutXkey = CalloutXkey.generate();
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const victim = SigningKey.generate();
  const entries = new Map<string, DirectoryEntry>([
    [victim.principal, { user: { principal: victim.principal, handle: "v", role: "member", status: "revoked", addedAt: "", addedBy: "" }, rooms: null, revision: "1:0" }],
  ]);
  const directory = new MemoryDirectory(entries);
  const requests = Array.from({ length: iterations }, () => authRequest(serverKey, serverXkey, calloutXkey, victim));
  const ctxFor = (denials: DenialCache | undefined): CalloutContext => ({
    // As the service signs (libsodium when it loads).
    issuer,
    appAccount: "UNIBUS",
    xkey: calloutXkey,
    directory,
    authorize: { cache: new PermissionCache(), ...(denials !== undefined ? { denials } : {}) },
  });
  const perCall = async (ctx: CalloutContext): Promise<number> => {
    // A callout is long-lived: measure its paths compiled. V8 optimises on
    // background threads, which process.cpuUsage counts, and 50 warm-up calls
    // left that compilation inside the measured window (~40 µs a refusal).
    for (const r of requests) await handleCalloutRequest(ctx, r, serverXkey.publicKey);
    const before = process.cpuUsage();
    for (const r of requests) {
      const out = await handleCalloutRequest(ctx, r, serverXkey.publicKey);
      if (out.kind !== "answered" || out.result.ok) throw new Error("a revoked principal was not refused");
    }
    const used = process.cpuUsage(before);
    return (used.user + used.system) / requests.length;
  };
  const cache = new DenialCache({ ttlMs: 3_600_000 });
  const cached = await perCall(ctxFor(cache));
  const full = await perCall(ctxFor(undefined));
  // The floor of a cached refusal is its one signature: printed so a loaded machine can be read.
  const payload = Buffer.from("x".repeat(300));
  const before = process.cpuUsage();
  for (let i = 0; i < iterations; i++) issuer.sign(payload);
  const used = process.cpuUsage(before);
  const signUs = (used.user + used.system) / iterations;
  return {
    name: `P13 callout CPU per refusal, cached vs full (1 sign = ${Math.round(signUs)} µs, ${signingBackend()} signer, ${calloutXkey.boxImplementation} box)`,
    unit: "µs",
    unibus: cached,
    raw: full,
    lowerIsBetter: true,
    goal: "cached < 100 µs",
  };
}

/** P13: the retry-storm case and the per-refusal CPU from the denial cache. */
export async function runRetryStorm(opts: RetryStormOptions): Promise<BenchCase[]> {
  const args: Required<RetryStormOptions> = { stormClients: 200, concurrency: 4, ...opts };
  return [await stormCase(args), await cpuCase(2_000)];
}

// Standalone, or as the storm child; importing from main.ts runs neither.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv[2] === "storm-worker") {
    runStormWorker().catch((err: unknown) => {
      process.stderr.write(`storm worker: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    });
  } else {
    runRetryStorm({ seconds: numberArg("--seconds", 3), stormClients: numberArg("--storm", 200) }).then(
      (cases) => {
        for (const c of cases) printCase(c);
      },
      (err: unknown) => {
        process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
        process.exit(1);
      },
    );
  }
}
