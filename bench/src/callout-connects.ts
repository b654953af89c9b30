/**
 * P1: connects/s through the auth callout ÷ plain nkey connects/s on a server
 * without callout, same run, same client signing (cached node:crypto key).
 *
 *   npx tsx bench/src/callout-connects.ts [--seconds 3] [--concurrency 32] [--xkey] [--in-process]
 *
 * The callout runs in a child process (as in production, it is its own
 * service), so the bench client's event loop does not do its work. Keys are
 * ephemeral; the child gets them on stdin, never argv. `npm run bench` runs
 * this through {@link runCalloutConnects}.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { NkeyPrefix, SigningKey, encodeNkeySeed, nkeyAuthenticator, randomBytes } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import {
  CalloutXkey,
  KvPrincipalDirectory,
  createAuthCalloutService,
} from "@unibus/auth-callout";
import { calloutServerConfig, servicePermissions } from "@unibus/kit";
import { printCase } from "./report.js";
import type { BenchCase } from "./report.js";

/** What the callout worker child needs (sent on stdin, never argv). */
export interface WorkerInput {
  url: string;
  calloutSeed: string;
  issuerSeed: string;
  xkeySeed?: string;
}

/** Options of {@link runCalloutConnects}. */
export interface CalloutConnectsOptions {
  /** Measured seconds per case and per side (raw and unibus each get this much). */
  seconds: number;
  /** Connects in flight in the concurrent case. */
  concurrency: number;
  /** Encrypt callout requests and responses with a server xkey. */
  xkey: boolean;
  /** Run the callout inside the bench process instead of a child (fewer process hops, shared CPU). Default false. */
  inProcess?: boolean;
}

function parseArgs(argv: string[]): Required<CalloutConnectsOptions> {
  const args: Required<CalloutConnectsOptions> = { seconds: 3, concurrency: 32, xkey: false, inProcess: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--seconds") args.seconds = Number(argv[++i]);
    else if (a === "--concurrency") args.concurrency = Number(argv[++i]);
    else if (a === "--xkey") args.xkey = true;
    else if (a === "--in-process") args.inProcess = true;
  }
  return args;
}

/** Child mode: run the callout service until stdin closes. */
async function runWorker(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) {
    chunks.push(c as Buffer);
    if (Buffer.concat(chunks).includes(10)) break;
  }
  const input = JSON.parse(Buffer.concat(chunks).toString("utf8")) as WorkerInput;
  const calloutKey = SigningKey.fromNkeySeed(input.calloutSeed);
  const nc = await connect({ servers: input.url, authenticator: nkeyAuthenticator(calloutKey), inboxPrefix: `_INBOX.${calloutKey.principal}` });
  const kvm = new Kvm(nc);
  const [users, rooms] = [await kvm.open("users"), await kvm.open("rooms_by_member")];
  const directory = new KvPrincipalDirectory(users, rooms);
  const quiet = { info: () => undefined, warn: () => undefined, error: (o: object) => process.stderr.write(`${JSON.stringify(o)}\n`) };
  await createAuthCalloutService(nc, {
    issuer: SigningKey.fromNkeySeed(input.issuerSeed),
    ...(input.xkeySeed !== undefined ? { xkey: CalloutXkey.fromSeed(input.xkeySeed) } : {}),
    directory,
    logger: quiet,
  });
  await nc.flush();
  process.stdout.write("ready\n");
  process.stdin.resume();
  process.stdin.on("end", () => void nc.close().then(() => process.exit(0)));
}

/** Starts the callout service in a child process, as in production; resolves once it answers. */
export async function startCalloutWorker(input: WorkerInput): Promise<ChildProcess> {
  const self = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, ["--import", "tsx", self, "callout-worker"], { stdio: ["pipe", "pipe", "inherit"] });
  child.stdin?.write(`${JSON.stringify(input)}\n`);
  const [data] = (await once(child.stdout ?? process.stdin, "data")) as [Buffer];
  if (!data.toString().includes("ready")) throw new Error(`callout worker failed: ${data.toString()}`);
  return child;
}

/** Connect+close cycles for `seconds`, `concurrency` at a time; returns connects and elapsed seconds. */
async function measure(url: string, key: SigningKey, seconds: number, concurrency: number): Promise<{ count: number; elapsed: number }> {
  const authenticator = nkeyAuthenticator(key);
  const opts = { servers: url, authenticator, inboxPrefix: `_INBOX.${key.principal}`, reconnect: false, timeout: 10_000 };
  const deadline = performance.now() + seconds * 1000;
  let count = 0;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const nc: NatsConnection = await connect(opts);
      count++;
      await nc.close();
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { count, elapsed: (performance.now() - start) / 1000 };
}

const SLICE_S = 0.5;

/**
 * Alternates raw and unibus in short slices so both see the same machine
 * load (the host is shared; back-to-back runs drifted by 2x).
 */
async function compare(rawUrl: string, unibusUrl: string, key: SigningKey, seconds: number, concurrency: number): Promise<{ raw: number; unibus: number }> {
  const raw = { count: 0, elapsed: 0 };
  const unibus = { count: 0, elapsed: 0 };
  for (let i = 0; i < Math.max(1, Math.round(seconds / SLICE_S)); i++) {
    const r = await measure(rawUrl, key, SLICE_S, concurrency);
    const u = await measure(unibusUrl, key, SLICE_S, concurrency);
    raw.count += r.count;
    raw.elapsed += r.elapsed;
    unibus.count += u.count;
    unibus.elapsed += u.elapsed;
  }
  return { raw: raw.count / raw.elapsed, unibus: unibus.count / unibus.elapsed };
}

/**
 * P1, sequential and `concurrency` at a time: callout connects/s against plain
 * nkey connects/s, with the same client key and authenticator.
 */
export async function runCalloutConnects(opts: CalloutConnectsOptions): Promise<BenchCase[]> {
  const args: Required<CalloutConnectsOptions> = { inProcess: false, ...opts };
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const calloutUser = SigningKey.generate();
  const membership = SigningKey.generate();
  const client = SigningKey.generate();
  const xkey = args.xkey ? CalloutXkey.generate() : undefined;

  const servers: TestServer[] = [];
  let child: ChildProcess | undefined;
  try {
    const raw = await startTestServer({ jetstream: false, config: { authorization: { users: [{ nkey: client.principal }] } } });
    servers.push(raw);
    const unibus = await startTestServer({
      config: calloutServerConfig({
        issuerAccountPublic: issuer.principal,
        calloutUserPublic: calloutUser.principal,
        ...(xkey !== undefined ? { xkeyPublic: xkey.publicKey } : {}),
        serviceUsers: [{ service: "membership", nkey: membership.principal, permissions: servicePermissions({ service: "membership", kvBuckets: ["users", "rooms_by_member"] }) }],
      }),
    });
    servers.push(unibus);
    const admin = await unibus.connect({ authenticator: nkeyAuthenticator(membership) });
    const kvm = new Kvm(admin);
    const users = await kvm.create("users");
    const rooms = await kvm.create("rooms_by_member");
    const now = new Date().toISOString();
    await users.put(client.principal, JSON.stringify({ principal: client.principal, handle: "bench", role: "member", status: "active", addedAt: now, addedBy: client.principal }));
    await rooms.put(client.principal, JSON.stringify({ principal: client.principal, rooms: { bench: "owner" } }));
    if (args.inProcess) {
      const calloutNc = await unibus.connect({ authenticator: nkeyAuthenticator(calloutUser), inboxPrefix: `_INBOX.${calloutUser.principal}` });
      const ckvm = new Kvm(calloutNc);
      await createAuthCalloutService(calloutNc, {
        issuer,
        ...(xkey !== undefined ? { xkey } : {}),
        directory: new KvPrincipalDirectory(await ckvm.open("users"), await ckvm.open("rooms_by_member")),
        logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
      });
    } else {
      child = await startCalloutWorker({
        url: unibus.url,
        calloutSeed: calloutUser.nkeySeed(),
        issuerSeed: issuer.nkeySeed(),
        ...(xkey !== undefined ? { xkeySeed: xkey.seed() } : {}),
      });
    }

    // Warm-up: JIT, key caches, the permission cache.
    await measure(raw.url, client, 0.5, 1);
    await measure(unibus.url, client, 0.5, 1);

    // The name carries what changes the figure; the default setup (child
    // process, per-login directory reads) is left out to keep the column narrow.
    const variant = [args.xkey ? "xkey" : "", args.inProcess ? "in-process" : ""].filter((v) => v !== "").join(", ");
    const label = `P1 callout connects${variant === "" ? "" : ` (${variant})`}`;
    const cases: BenchCase[] = [];
    for (const concurrency of [1, args.concurrency]) {
      const { raw: rawRate, unibus: unibusRate } = await compare(raw.url, unibus.url, client, args.seconds, concurrency);
      cases.push({
        name: `${label}, ${concurrency === 1 ? "one at a time" : `${concurrency} in flight`}`,
        unit: "conn/s",
        unibus: unibusRate,
        raw: rawRate,
        goal: ">= 0.7",
      });
    }
    return cases;
  } finally {
    child?.stdin?.end();
    if (child !== undefined && child.exitCode === null) await Promise.race([once(child, "exit"), new Promise((r) => setTimeout(r, 2000))]);
    if (child !== undefined && child.exitCode === null) child.kill();
    for (const s of servers) await s.stop();
  }
}

// Standalone (`npx tsx bench/src/callout-connects.ts`) or as the callout
// worker child; importing this module from main.ts must run neither.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv[2] === "callout-worker") {
    runWorker().catch((err: unknown) => {
      process.stderr.write(`callout worker: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    });
  } else {
    const args = parseArgs(process.argv.slice(2));
    runCalloutConnects(args).then(
      (cases) => {
        console.log(`P1: ${args.seconds} s per side, interleaved in ${SLICE_S} s slices; raw = plain nkey user on a server without callout`);
        for (const c of cases) printCase(c);
      },
      (err: unknown) => {
        process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
        process.exit(1);
      },
    );
  }
}
