/**
 * The entry point of a compose cluster node (nats-1..3, the unibus/cluster-node
 * image). Compose cannot replace a container in the middle of one `up`, so the
 * node changes mode inside this one process, picking it from what its volumes
 * hold:
 *
 *   adopted     The node home (/node) is UP and its store is on the node's own
 *               key: `unibus node start` joins through a peer's client port and
 *               runs nats-server with the derived key in its environment only.
 *               With a recovery secret mounted (a cold start: no gateway alive)
 *               the node opens its wrapped CUK with it instead of joining.
 *   bootstrap   First `up`: nats-server on the stack's bootstrap key (init's
 *               share) so the cluster, its services and the gateway can start.
 *               Once the `enroll` one-shot committed this node's home and every
 *               earlier node is adopted, the node rebuilds: the bootstrap store
 *               is set aside, `node start` brings the node back under the same
 *               server name on an empty store and its own key, the peers copy
 *               every stream in, and only then is the old store deleted.
 *
 * One node rebuilds at a time and only while every stream has three current
 * copies, so two copies of everything exist throughout. The key or either half
 * never appear in argv or this process's output.
 */
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { JSZ_COPIES_QUERY, catchUpBlocker, rebuildBlocker } from "@unibus/cli";
import type { Jsz } from "@unibus/cli";

const NODE = process.env["UNIBUS_BOOT_NODE"] ?? "";
const NODES = (process.env["UNIBUS_CLUSTER_NODES"] ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
const HOME = "/node";
/** init's share: the bootstrap nats.conf, its key file (until every node is adopted) and bus.json. */
const SHARE = "/etc/unibus";
/** The bootstrap store (its own volume); set aside during the rebuild. */
const DATA = "/data";
const RETIRED = join(DATA, "retired");
/** Markers only (no secret): `<node>.adopted` once a node runs on its own key. */
const BOOT = "/boot";
/** A compose secret: /dev/null unless the operator mounts the recovery secret for a cold start. */
const RECOVERY = "/run/secrets/recovery-secret";
const ADOPTED = join(HOME, "adopted");
const NATS_BIN = process.env["NATS_SERVER_BIN"] ?? "/usr/local/bin/nats-server";
const CLI = "libs/cli/bin/unibus.mjs";
const MONITOR = 8222;
/** How long a rebuilt node may take to hold a current copy of every stream before the rebuild is rolled back. */
const CATCH_UP_MS = 300_000;

function say(line: string): void {
  process.stdout.write(`[unibus node-boot ${NODE}] ${line}\n`);
}

/** A node's /jsz, or undefined when it does not answer (compose hostnames are the server names). */
async function jsz(host: string): Promise<Jsz | undefined> {
  try {
    const res = await fetch(`http://${host}:${MONITOR}${JSZ_COPIES_QUERY}`, { signal: AbortSignal.timeout(5_000) });
    return res.ok ? ((await res.json()) as Jsz) : undefined;
  } catch {
    return undefined;
  }
}

async function views(): Promise<Map<string, Jsz | undefined>> {
  return new Map(await Promise.all(NODES.map(async (n) => [n, await jsz(n)] as const)));
}

/** Why the node may not drop its copy yet: the two others must hold everything, current (rebuildBlocker). */
async function notSafeToRebuild(): Promise<string | undefined> {
  return rebuildBlocker(await views(), NODES);
}

/** Why the rebuilt node does not hold a current copy of every stream yet (its own monitoring port, not only the leader's word). */
async function notCaughtUp(): Promise<string | undefined> {
  const answered = new Map([...(await views())].filter((e): e is [string, Jsz] => e[1] !== undefined));
  return catchUpBlocker(NODE, await jsz("127.0.0.1"), answered);
}

async function until(what: string, check: () => Promise<string | undefined>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    const why = await check();
    if (why === undefined) return;
    if (why !== last) say(`waiting for ${what}: ${why}`);
    last = why;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}: ${why}`);
    await delay(1_000);
  }
}

/** A child's exit, as a promise (code, or 1 for a signal). */
function exited(child: ChildProcess): Promise<number> {
  return new Promise((done) => child.once("exit", (code) => done(code ?? 1)));
}

/** Stops `child` with SIGTERM (nats-server: lame duck is off in a container stop; it shuts down cleanly). */
async function stop(child: ChildProcess, ended: Promise<number>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  await ended;
}

/** The cold-start secret when the operator mounted one (the default mount is /dev/null: not a file). */
async function recoverySecretFile(): Promise<string | undefined> {
  try {
    const st = await stat(RECOVERY);
    return st.isFile() && st.size > 0 ? RECOVERY : undefined;
  } catch {
    return undefined;
  }
}

/** `unibus node start` as a child: it joins (or opens the wrapped CUK) and runs nats-server with the key in that server's environment only. */
async function nodeStart(): Promise<ChildProcess> {
  const routes = NODES.filter((n) => n !== NODE).map((n) => `nats-route://${n}:6222`);
  const recovery = await recoverySecretFile();
  const args = [CLI, "node", "start", "--home", HOME, "--listen", "0.0.0.0:6222", "--routes", routes.join(","), "--host", "0.0.0.0", "--port", "4222", "--monitor-port", String(MONITOR), "--bus-config", join(SHARE, "bus.json")];
  if (recovery !== undefined) args.push("--recovery-secret-file", recovery);
  say(recovery === undefined ? "node start: joining through a peer" : "node start: cold start with the mounted recovery secret");
  return spawn(process.execPath, args, { stdio: "inherit", env: { ...process.env, UNIBUS_NODE_HOME: HOME, UNIBUS_REPLICA_PSK_FILE: join(HOME, "replica.psk") } });
}

/** The bootstrap server: init's config, the key read from init's share into the server's environment only. */
async function bootstrapServer(): Promise<ChildProcess> {
  const key = (await readFile(join(SHARE, "jetstream.key"), "utf8")).trim();
  say("bootstrap: nats-server on the stack's bootstrap key until this node is enrolled");
  return spawn(NATS_BIN, ["-c", join(SHARE, "nats.conf")], { stdio: "inherit", env: { PATH: "/usr/local/bin", UNIBUS_JS_KEY: key } });
}

/** Resolves on SIGTERM/SIGINT (compose stop). */
const stopRequested = new Promise<void>((done) => {
  process.once("SIGTERM", () => done());
  process.once("SIGINT", () => done());
});

/** Runs `child` until it exits or a stop is requested; the process exits with its status. */
async function supervise(child: ChildProcess): Promise<never> {
  const ended = exited(child);
  const outcome = await Promise.race([ended.then((code) => ({ code })), stopRequested.then(() => ({ code: undefined }))]);
  if (outcome.code === undefined) {
    await stop(child, ended);
    process.exit(0);
  }
  say(`child exited with ${outcome.code}`);
  process.exit(outcome.code === 0 ? 1 : outcome.code);
}

/** The rebuild: bootstrap store aside, the node on its own key, peers copy everything in, then the old store goes. */
async function rebuild(bootstrap: { child: ChildProcess; ended: Promise<number> } | undefined): Promise<never> {
  if (bootstrap !== undefined) {
    // Waits as long as it takes (a peer down keeps this node on the bootstrap key), but not past a stop or the server's own exit.
    const outcome = await Promise.race([
      until("two other current copies of every stream", notSafeToRebuild, 24 * 3600_000).then(() => "safe" as const),
      bootstrap.ended.then(() => "exited" as const),
      stopRequested.then(() => "stop" as const),
    ]);
    if (outcome === "exited") process.exit((await bootstrap.ended) || 1);
    if (outcome === "stop") {
      await stop(bootstrap.child, bootstrap.ended);
      process.exit(0);
    }
    say("rebuilding: the peers hold everything; stopping the bootstrap server");
    await stop(bootstrap.child, bootstrap.ended);
    if (existsSync(join(DATA, "jetstream"))) await rename(join(DATA, "jetstream"), RETIRED);
  }
  const child = await nodeStart();
  const ended = exited(child);
  try {
    const outcome = await Promise.race([
      until("this node's own current copy of every stream", notCaughtUp, CATCH_UP_MS).then(() => "caught-up" as const),
      ended.then((code) => Promise.reject(new Error(`node start exited with ${code}`))),
      stopRequested.then(() => "stop" as const),
    ]);
    if (outcome === "stop") {
      // The bootstrap store stays aside: the next start resumes the rebuild.
      await stop(child, ended);
      process.exit(0);
    }
  } catch (err) {
    // The bootstrap store is still there: put it back so the next start runs as before, nothing lost.
    say(`rebuild failed (${(err as Error).message}); restoring the bootstrap store`);
    await stop(child, ended);
    await rm(join(HOME, "data"), { recursive: true, force: true });
    await rm(join(HOME, "store.check"), { force: true });
    if (existsSync(RETIRED)) await rename(RETIRED, join(DATA, "jetstream"));
    process.exit(1);
  }
  await writeFile(ADOPTED, `${new Date().toISOString()}\n`, { mode: 0o600 });
  await writeFile(join(BOOT, `${NODE}.adopted`), `${new Date().toISOString()}\n`, { mode: 0o644 });
  await rm(RETIRED, { recursive: true, force: true });
  say("adopted: this node runs on its own derived key; the bootstrap store is deleted");
  return supervise(child);
}

async function main(): Promise<never> {
  if (NODE === "" || !NODES.includes(NODE)) throw new Error(`UNIBUS_BOOT_NODE (${NODE}) must be one of UNIBUS_CLUSTER_NODES (${NODES.join(",")})`);
  if (existsSync(ADOPTED)) return supervise(await nodeStart());
  // A rebuild that was killed: its store is set aside and the node home holds a partial copy; resume it.
  if (existsSync(RETIRED)) return rebuild(undefined);
  const child = await bootstrapServer();
  const ended = exited(child);
  const enrolled = (async (): Promise<boolean> => {
    const earlier = NODES.slice(0, NODES.indexOf(NODE));
    for (;;) {
      if (existsSync(join(HOME, "cuk.wrapped")) && earlier.every((n) => existsSync(join(BOOT, `${n}.adopted`)))) return true;
      await delay(1_000);
    }
  })();
  const next = await Promise.race([enrolled.then(() => "rebuild" as const), ended.then(() => "exited" as const), stopRequested.then(() => "stop" as const)]);
  if (next === "exited") process.exit((await ended) || 1);
  if (next === "stop") {
    await stop(child, ended);
    process.exit(0);
  }
  return rebuild({ child, ended });
}

main().catch((err: unknown) => {
  say(`failed: ${(err as Error).message}`);
  process.exit(1);
});
