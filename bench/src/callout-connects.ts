/**
 * P1: connects/s through the auth callout ÷ plain nkey connects/s on a server
 * without callout, same run, same client signing (cached node:crypto key);
 * and ÷ the floor, a do-nothing callout in the same layout that only signs
 * (what no callout can beat: the server's own side of the protocol).
 *
 *   npx tsx bench/src/callout-connects.ts [--seconds 3] [--concurrency 32] [--xkey] [--in-process] [--memory-directory] [--leader-reads] [--fences N] [--late-fence] [--no-lease]
 *
 * The callout reads its directory as in production: the watched copy,
 * fenced in batches by the stream leaders ({@link WatchedDirectory}).
 * `--leader-reads` reads the two records from the leaders per login instead
 * (the previous design), for comparison.
 * `--fences N` bounds the fences out at once (1 = one at a time, the previous
 * scheduling); `--late-fence` begins a login's fence only at its directory
 * read, after the request's decoding and signature checks (the previous
 * order). Both only to measure what each change is worth: `--vs F,late|early`
 * runs a second callout with that scheduling beside the first, measured in
 * the same interleaved slices, and prints the first ÷ the second (a paired
 * figure: on this shared machine separate runs of one build swing by ±0.15).
 * The callout holds its login lease as in production (logins answered from
 * memory while it holds; nothing writes the directory during the bench, so
 * no barrier is asked); `--no-lease` fences every login (the shape before it).
 * `--memory-directory` (child mode only) keeps each principal's first read:
 * it measures the directory's share of a login and is unsafe by design.
 * `BENCH_CALLOUT_PROF=<dir>` runs the callout child under `--cpu-prof`.
 *
 * The callout runs in a child process (as in production, it is its own
 * service), so the bench client's event loop does not do its work. Keys are
 * ephemeral; the child gets them on stdin, never argv. `npm run bench` runs
 * this through {@link runCalloutConnects}.
 */
import { pino } from "pino";
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
import { Svcm } from "@nats-io/services";
import {
  CalloutLeaseRunner,
  CalloutReconnect,
  CalloutSubject,
  CalloutXkey,
  KvPrincipalDirectory,
  WatchedDirectory,
  createAuthCalloutService,
  encodeAuthorizationResponse,
  encodeUserJwt,
  permissionsFor,
} from "@unibus/auth-callout";
import type { AuthorizationRequest, CalloutContext, DirectoryEntry, PrincipalDirectory, RoomsRecord, UserRecord } from "@unibus/auth-callout";
import { calloutServerConfig, servicePermissions } from "@unibus/kit";
import { CalloutLease, StoredBucket } from "@unibus/contracts";
import { printCase } from "./report.js";
import type { BenchCase } from "./report.js";

/** What the callout worker child needs (sent on stdin, never argv). */
export interface WorkerInput {
  url: string;
  calloutSeed: string;
  issuerSeed: string;
  xkeySeed?: string;
  /**
   * Run the floor instead of the callout: the principal whose permission set
   * every login gets, computed once (same JWT size as the real callout's).
   */
  floorPrincipal?: string;
  /** Answer every login after the first from memory: the directory's share of P1, not a production shape. */
  memoryDirectory?: boolean;
  /** Two leader reads per login instead of the fenced watched copy. */
  leaderReads?: boolean;
  /** Fences out at once (the directory's default otherwise). */
  fences?: number;
  /** Begin the fence at the directory read instead of on arrival. */
  lateFence?: boolean;
  /** No login lease: every login fenced (the previous production shape). */
  noLease?: boolean;
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
  /** Measure what the directory reads cost: the callout reads each principal once and keeps it (unsafe; bench only). Default false. */
  memoryDirectory?: boolean;
  /** Two leader reads per login (the previous design) instead of the fenced watched copy. Default false. */
  leaderReads?: boolean;
  /** Fences out at once; 0 = the directory's default. */
  fences?: number;
  /** Begin a login's fence at its directory read, not on arrival. Default false. */
  lateFence?: boolean;
  /** Run the watched directory without its login lease (a fence per login, as before the lease). Default false. */
  noLease?: boolean;
  /** A second callout with this fence scheduling, measured beside the first (paired comparison). */
  versus?: { fences: number; lateFence: boolean };
}

/** The options with their defaults filled in (`versus` stays optional: no second callout). */
type ResolvedOptions = Required<Omit<CalloutConnectsOptions, "versus">> & Pick<CalloutConnectsOptions, "versus">;

function parseArgs(argv: string[]): ResolvedOptions {
  const args: ResolvedOptions = { seconds: 3, concurrency: 32, xkey: false, inProcess: false, memoryDirectory: false, leaderReads: false, fences: 0, lateFence: false, noLease: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--seconds") args.seconds = Number(argv[++i]);
    else if (a === "--concurrency") args.concurrency = Number(argv[++i]);
    else if (a === "--xkey") args.xkey = true;
    else if (a === "--in-process") args.inProcess = true;
    else if (a === "--memory-directory") args.memoryDirectory = true;
    else if (a === "--leader-reads") args.leaderReads = true;
    else if (a === "--fences") args.fences = Number(argv[++i]);
    else if (a === "--late-fence") args.lateFence = true;
    else if (a === "--no-lease") args.noLease = true;
    else if (a === "--vs") {
      const [fences, when] = (argv[++i] ?? "").split(",");
      args.versus = { fences: Number(fences), lateFence: when === "late" };
    }
  }
  return args;
}

/** What the worker reports before it exits on the parent's SIGTERM. */
let beforeExit: (() => Promise<void>) | undefined;

/** Child mode: run the callout service until stdin closes. */
async function runWorker(): Promise<void> {
  // The parent's kill must still end through exit, so --cpu-prof writes its profile.
  process.on("SIGTERM", () => void (beforeExit?.() ?? Promise.resolve()).finally(() => process.exit(0)));
  // The parent's end-of-warm-up signal; only the callout acts on it (below).
  process.on("SIGUSR2", () => undefined);
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) {
    chunks.push(c as Buffer);
    if (Buffer.concat(chunks).includes(10)) break;
  }
  const input = JSON.parse(Buffer.concat(chunks).toString("utf8")) as WorkerInput;
  const calloutKey = SigningKey.fromNkeySeed(input.calloutSeed);
  // The callout service's own reconnect settings (entry.ts), which the reconnect storm (P1s) depends on.
  const nc = await connect({
    servers: input.url,
    authenticator: nkeyAuthenticator(calloutKey),
    inboxPrefix: `_INBOX.${calloutKey.principal}`,
    maxReconnectAttempts: -1,
    reconnectTimeWait: CalloutReconnect.timeWaitMs,
    reconnectJitter: CalloutReconnect.jitterMs,
  });
  if (input.floorPrincipal !== undefined) {
    await createFloorCallout(nc, {
      issuer: SigningKey.fromNkeySeed(input.issuerSeed),
      ...(input.xkeySeed !== undefined ? { xkey: CalloutXkey.fromSeed(input.xkeySeed) } : {}),
      principal: input.floorPrincipal,
    });
    await nc.flush();
    process.stdout.write("ready\n");
    process.stdin.resume();
    process.stdin.on("end", () => void nc.close().then(() => process.exit(0)));
    return;
  }
  const kvm = new Kvm(nc);
  const [users, rooms] = [await kvm.open("users", { allow_direct: false }), await kvm.open("rooms_by_member", { allow_direct: false })];
  let directory: PrincipalDirectory;
  if (input.leaderReads === true || input.memoryDirectory === true) {
    directory = new KvPrincipalDirectory(users, rooms);
  } else {
    const watched = await WatchedDirectory.start(users, rooms, {
      logger: pino({ level: "warn" }, pino.destination(2)),
      ...(input.fences !== undefined ? { maxFencesInFlight: input.fences } : {}),
    });
    // Without `begin` the callout takes the fence at its directory read (the previous order).
    directory = input.lateFence === true ? { lookup: (principal) => watched.lookup(principal) } : watched;
    // The login lease, as the entry runs it (its bucket made here, as the
    // callout's entry does); nothing writes the directory during the bench,
    // so no barrier is asked for.
    if (input.noLease !== true && input.lateFence !== true) {
      const leases = await kvm.create(StoredBucket.authCallout.leases, { ttl: CalloutLease.recordTtlMs, allow_direct: false });
      await CalloutLeaseRunner.start(nc, leases, watched, { logger: pino({ level: "warn" }, pino.destination(2)) });
    }
    // Logins per fence, on stderr when the worker ends: how well the batching works.
    process.on("exit", () => process.stderr.write(`callout directory: ${JSON.stringify(watched.stats)}\n`));
  }
  if (input.memoryDirectory === true) {
    // Measurement only (the directory's share of a login): a first read is
    // kept forever, so a revoke would never be seen. Never a production shape.
    const kept = new Map<string, Promise<DirectoryEntry | null>>();
    const read = directory;
    directory = {
      lookup: (principal) => {
        let hit = kept.get(principal);
        if (hit === undefined) kept.set(principal, (hit = read.lookup(principal)));
        return hit;
      },
    };
  }
  // Errors only, to stderr: stdout carries the worker's "ready" line.
  const quiet = pino({ level: "error" }, pino.destination(2));
  const running = await createAuthCalloutService(nc, {
    issuer: SigningKey.fromNkeySeed(input.issuerSeed),
    ...(input.xkeySeed !== undefined ? { xkey: CalloutXkey.fromSeed(input.xkeySeed) } : {}),
    directory,
    logger: quiet,
  });
  await nc.flush();
  process.stdout.write("ready\n");
  process.stdin.resume();
  process.stdin.on("end", () => void nc.close().then(() => process.exit(0)));
  // A login's time inside the callout (arrival to answer), over the whole
  // run, printed as the parent stops the worker: less noisy than connects/s
  // on a shared box.
  // The parent signals the end of its warm-up: the first logins (JIT, the watch's replay) are not counted.
  process.on("SIGUSR2", () => running.service.reset());
  beforeExit = async () => {
    const auth = (await running.service.stats()).endpoints?.find((e) => e.name === "AUTH");
    if (auth !== undefined) process.stderr.write(`callout time per login: ${(auth.average_processing_time / 1e3).toFixed(0)} µs over ${auth.num_requests} (${input.fences ?? "default"} fences out, ${input.lateFence === true ? "late" : "early"})\n`);
  };
}

/** The directory record of the bench principal (the floor grants this set to everyone). */
export function benchRecords(principal: string): { user: UserRecord; rooms: RoomsRecord } {
  return {
    user: { principal, handle: "bench", role: "member", status: "active", addedAt: new Date(0).toISOString(), addedBy: principal },
    rooms: { principal, rooms: { bench: "owner" } },
  };
}

/**
 * The floor of a callout login: what no callout can avoid. It checks nothing
 * and reads nothing (no request signature, no nonce signature, no
 * directory); it opens the xkey box if there is one, reads `user_nkey` and
 * the server id, signs a user JWT with a fixed permission set and signs the
 * response, sealed back. Same micro service shape as the real callout, so
 * the process layout and the NATS path are the same. A bench fixture only:
 * it admits anyone.
 */
export async function createFloorCallout(nc: NatsConnection, opts: { issuer: SigningKey; xkey?: CalloutXkey; principal: string }): Promise<void> {
  const { user, rooms } = benchRecords(opts.principal);
  const permissions = permissionsFor({ kind: "user", user }, rooms);
  const ctx: CalloutContext = {
    // The same signer as the service: the floor is the cheapest a callout can be.
    issuer: opts.issuer,
    appAccount: "UNIBUS",
    directory: { lookup: () => Promise.reject(new Error("the floor reads no directory")) },
    ...(opts.xkey !== undefined ? { xkey: opts.xkey } : {}),
  };
  const svcm = new Svcm(nc as unknown as ConstructorParameters<typeof Svcm>[0]);
  const service = await svcm.add({ name: "auth-callout-floor", version: "0.1.0" });
  service.addGroup(CalloutSubject.group).addEndpoint(CalloutSubject.endpoint, {
    handler: (err, msg) => {
      if (err !== null) return;
      const header = msg.headers?.get(CalloutSubject.xkeyHeader) || undefined;
      const token = Buffer.from(opts.xkey !== undefined && header !== undefined ? opts.xkey.open(msg.data, header) : msg.data).toString("utf8");
      const dot = token.indexOf(".");
      const claims = JSON.parse(Buffer.from(token.slice(dot + 1, token.indexOf(".", dot + 1)), "base64url").toString("utf8")) as { nats: AuthorizationRequest };
      const request = claims.nats;
      const response = encodeAuthorizationResponse(ctx, request, { jwt: encodeUserJwt(ctx, request, opts.principal, permissions) });
      const reply = Buffer.from(response, "utf8");
      msg.respond(opts.xkey !== undefined && header !== undefined ? opts.xkey.seal(reply, header) : reply);
    },
  });
}

/** Starts the callout service in a child process, as in production; resolves once it answers. */
export async function startCalloutWorker(input: WorkerInput): Promise<ChildProcess> {
  const self = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [...(process.env["BENCH_CALLOUT_PROF"] !== undefined && input.floorPrincipal === undefined ? ["--cpu-prof", `--cpu-prof-dir=${process.env["BENCH_CALLOUT_PROF"]}`] : []), "--import", "tsx", self, "callout-worker"], { stdio: ["pipe", "pipe", "inherit"] });
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
 * Alternates the servers in short slices so all see the same machine load
 * (the host is shared; back-to-back runs drifted by 2x). Returns connects/s
 * per URL, in order.
 */
async function compare(urls: readonly string[], key: SigningKey, seconds: number, concurrency: number): Promise<number[]> {
  const totals = urls.map(() => ({ count: 0, elapsed: 0 }));
  for (let i = 0; i < Math.max(1, Math.round(seconds / SLICE_S)); i++) {
    // Forward, then backward (ABBA): a slice may pay for what the one before
    // it left behind (the bench's own garbage, sockets closing), and in one
    // fixed order the callout always followed plain nkey's fast slice.
    for (let k = 0; k < urls.length; k++) {
      const j = i % 2 === 0 ? k : urls.length - 1 - k;
      const r = await measure(urls[j]!, key, SLICE_S, concurrency);
      totals[j]!.count += r.count;
      totals[j]!.elapsed += r.elapsed;
    }
  }
  return totals.map((t) => t.count / t.elapsed);
}

/** A server with the callout configured, its directory seeded with the bench principal. */
async function startCalloutServer(issuer: SigningKey, calloutUser: SigningKey, client: SigningKey, xkey: CalloutXkey | undefined): Promise<TestServer> {
  const membership = SigningKey.generate();
  const server = await startTestServer({
    config: calloutServerConfig({
      issuerAccountPublic: issuer.principal,
      calloutUserPublic: calloutUser.principal,
      ...(xkey !== undefined ? { xkeyPublic: xkey.publicKey } : {}),
      serviceUsers: [{ service: "membership", nkey: membership.principal, permissions: servicePermissions({ service: "membership", kvBuckets: ["users", "rooms_by_member"] }) }],
    }),
  });
  const admin = await server.connect({ authenticator: nkeyAuthenticator(membership) });
  const kvm = new Kvm(admin);
  // Leader reads, as the services create them (docs/design.md "Reads that decide access").
  const users = await kvm.create("users", { allow_direct: false });
  const rooms = await kvm.create("rooms_by_member", { allow_direct: false });
  const records = benchRecords(client.principal);
  await users.put(client.principal, JSON.stringify(records.user));
  await rooms.put(client.principal, JSON.stringify(records.rooms));
  await admin.close();
  return server;
}

/**
 * P1, sequential and `concurrency` at a time: callout connects/s against plain
 * nkey connects/s, with the same client key and authenticator; and against
 * the floor (a do-nothing callout in the same layout, {@link createFloorCallout}).
 */
export async function runCalloutConnects(opts: CalloutConnectsOptions): Promise<BenchCase[]> {
  const args: ResolvedOptions = { inProcess: false, memoryDirectory: false, leaderReads: false, fences: 0, lateFence: false, noLease: false, ...opts };
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const calloutUser = SigningKey.generate();
  const client = SigningKey.generate();
  const xkey = args.xkey ? CalloutXkey.generate() : undefined;

  const servers: TestServer[] = [];
  const children: ChildProcess[] = [];
  try {
    const raw = await startTestServer({ jetstream: false, config: { authorization: { users: [{ nkey: client.principal }] } } });
    servers.push(raw);
    const unibus = await startCalloutServer(issuer, calloutUser, client, xkey);
    servers.push(unibus);
    const floor = await startCalloutServer(issuer, calloutUser, client, xkey);
    servers.push(floor);
    const workerKeys = {
      calloutSeed: calloutUser.nkeySeed(),
      issuerSeed: issuer.nkeySeed(),
      ...(xkey !== undefined ? { xkeySeed: xkey.seed() } : {}),
    };
    if (args.inProcess) {
      const calloutNc = await unibus.connect({ authenticator: nkeyAuthenticator(calloutUser), inboxPrefix: `_INBOX.${calloutUser.principal}` });
      const ckvm = new Kvm(calloutNc);
      await createAuthCalloutService(calloutNc, {
        issuer,
        ...(xkey !== undefined ? { xkey } : {}),
        directory: new KvPrincipalDirectory(await ckvm.open("users"), await ckvm.open("rooms_by_member")),
        logger: pino({ level: "silent" }),
      });
      const floorNc = await floor.connect({ authenticator: nkeyAuthenticator(calloutUser), inboxPrefix: `_INBOX.${calloutUser.principal}` });
      await createFloorCallout(floorNc, { issuer, ...(xkey !== undefined ? { xkey } : {}), principal: client.principal });
    } else {
      children.push(await startCalloutWorker({ url: unibus.url, ...workerKeys, ...(args.memoryDirectory ? { memoryDirectory: true } : {}), ...(args.leaderReads ? { leaderReads: true } : {}), ...(args.fences > 0 ? { fences: args.fences } : {}), ...(args.lateFence ? { lateFence: true } : {}), ...(args.noLease ? { noLease: true } : {}) }));
      children.push(await startCalloutWorker({ url: floor.url, ...workerKeys, floorPrincipal: client.principal }));
    }
    let versus: TestServer | undefined;
    if (args.versus !== undefined && !args.inProcess) {
      versus = await startCalloutServer(issuer, calloutUser, client, xkey);
      servers.push(versus);
      children.push(await startCalloutWorker({ url: versus.url, ...workerKeys, fences: args.versus.fences, lateFence: args.versus.lateFence }));
    }

    // Warm-up: JIT, key caches, the permission cache.
    for (const url of [raw.url, unibus.url, floor.url, ...(versus !== undefined ? [versus.url] : [])]) await measure(url, client, 0.5, 1);
    for (const child of children) child.kill("SIGUSR2");

    // The name carries what changes the figure; the default setup (child
    // process, per-login directory reads) is left out to keep the column narrow.
    const variant = [args.xkey ? "xkey" : "", args.inProcess ? "in-process" : "", args.memoryDirectory ? "memory directory, unsafe" : "", args.leaderReads ? "leader reads" : "", args.fences > 0 ? `${args.fences} fences out` : "", args.lateFence ? "late fence" : "", args.noLease ? "no lease" : ""].filter((v) => v !== "").join(", ");
    const label = `P1 callout connects${variant === "" ? "" : ` (${variant})`}`;
    const cases: BenchCase[] = [];
    for (const concurrency of [1, args.concurrency]) {
      const [rawRate, unibusRate, floorRate, versusRate] = (await compare([raw.url, unibus.url, floor.url, ...(versus !== undefined ? [versus.url] : [])], client, args.seconds, concurrency)) as [number, number, number, number | undefined];
      const lane = concurrency === 1 ? "one at a time" : `${concurrency} in flight`;
      cases.push({ name: `${label}, ${lane}`, unit: "conn/s", unibus: unibusRate, raw: rawRate, goal: ">= 0.7" });
      // Same columns, the floor in place of raw: how close the callout is to what no callout can beat.
      cases.push({ name: `  ÷ floor (raw column = floor), ${lane}`, unit: "conn/s", unibus: unibusRate, raw: floorRate, goal: ">= 0.9 where floor < 0.7" });
      cases.push({ name: `  floor ÷ plain nkey, ${lane}`, unit: "conn/s", unibus: floorRate, raw: rawRate, goal: "printed" });
      if (versusRate !== undefined && args.versus !== undefined) {
        const vs = `${args.versus.fences} fences out, ${args.versus.lateFence ? "late" : "early"}`;
        cases.push({ name: `  ÷ callout (${vs}), ${lane}`, unit: "conn/s", unibus: unibusRate, raw: versusRate, goal: "printed" });
        cases.push({ name: `  callout (${vs}) ÷ floor, ${lane}`, unit: "conn/s", unibus: versusRate, raw: floorRate, goal: "printed" });
      }
    }
    return cases;
  } finally {
    for (const child of children) {
      child.stdin?.end();
      if (child.exitCode === null) await Promise.race([once(child, "exit"), new Promise((r) => setTimeout(r, 2000))]);
      if (child.exitCode === null) child.kill();
    }
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
