/**
 * P11: the embedded default's footprint. Starts the real `unibus up` (what
 * `npm start` runs) in a temp state dir, waits until every service answers
 * `$SRV.PING`, and sums the resident memory of `up`'s whole process tree from
 * /proc (up itself, nats-server, the bus watchdog, the services). Then stops
 * it and starts it again on the same state dir: the restart is timed from
 * spawning `up` to every service answering.
 *
 * raw, same run: nats-server alone (its RSS in the tree; for the restart, the
 * time until `up` reports the server ready), so the ratio is the stack ÷
 * nats-server.
 *
 *   npx tsx bench/src/embedded-stack.ts [--settle-ms 3000]
 *
 * UNIBUS_SERVICE_PROCESSES=each measures the one-process-per-service mode.
 * Linux only (/proc).
 */
import { readFile, readdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { Svcm } from "@nats-io/services";
import { ServiceName } from "@unibus/contracts";
import { loadIdentityFile, nkeyAuthenticator } from "@unibus/crypto";
import { freeLoopbackPort, spawnWatched } from "@unibus/testing";
import type { WatchedProcess } from "@unibus/testing";
import { numberArg, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

const BIN = fileURLToPath(new URL("../../libs/cli/bin/unibus.mjs", import.meta.url));
/** The goals for the laptop default. */
const RSS_GOAL_MB = 250;
const RESTART_GOAL_MS = 3_000;
const READY_TIMEOUT_MS = 90_000;

interface ProcInfo {
  readonly pid: number;
  readonly ppid: number;
  readonly name: string;
  readonly rssKb: number;
}

async function readProc(pid: number): Promise<ProcInfo | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const field = (key: string): string => new RegExp(`^${key}:\\s*(.*)$`, "m").exec(status)?.[1] ?? "";
    return { pid, ppid: Number(field("PPid")), name: field("Name"), rssKb: Number.parseInt(field("VmRSS") || "0", 10) };
  } catch {
    return undefined; // Gone while we looked.
  }
}

/** `root` and every descendant, from /proc. */
export async function processTree(root: number): Promise<ProcInfo[]> {
  const all = (await Promise.all((await readdir("/proc")).filter((d) => /^\d+$/.test(d)).map((d) => readProc(Number(d))))).filter((p): p is ProcInfo => p !== undefined);
  const children = new Map<number, ProcInfo[]>();
  for (const p of all) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p]);
  const out: ProcInfo[] = [];
  const walk = (pid: number): void => {
    const me = all.find((p) => p.pid === pid);
    if (me !== undefined) out.push(me);
    for (const c of children.get(pid) ?? []) walk(c.pid);
  };
  walk(root);
  return out;
}

/** Resolves once every service answers `$SRV.PING` to the admin; the time is `performance.now()` then. */
async function allServicesAnswer(url: string, adminFile: string, up: WatchedProcess): Promise<number> {
  const admin = await loadIdentityFile(adminFile);
  const expected: readonly string[] = Object.values(ServiceName);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (up.child.exitCode !== null) throw new Error(`unibus up exited early:\n${up.output()}`);
    if (Date.now() > deadline) throw new Error(`services not all answering within ${READY_TIMEOUT_MS} ms:\n${up.output()}`);
    try {
      const nc = await connect({ servers: url, reconnect: false, authenticator: nkeyAuthenticator(admin.signingKey), inboxPrefix: `_INBOX.${admin.principal}`, timeout: 1_000 });
      try {
        const client = new Svcm(nc as unknown as ConstructorParameters<typeof Svcm>[0]).client({ strategy: "stall", stall: 100, maxWait: 1_000 });
        const seen = new Set<string>();
        for await (const pong of await client.ping()) seen.add(pong.name);
        if (expected.every((n) => seen.has(n))) return performance.now();
      } finally {
        await nc.close();
      }
    } catch {
      // Not up yet (the callout is what admits the admin): ask again.
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Options of {@link runEmbeddedStack}. */
export interface EmbeddedStackOptions {
  /** How long the stack idles after it is ready before its memory is read. */
  readonly settleMs: number;
}

export async function runEmbeddedStack(opts: EmbeddedStackOptions): Promise<BenchCase[]> {
  const home = await mkdtemp(join(tmpdir(), "unibus-bench-p11-"));
  const port = await freeLoopbackPort();
  const { UNIBUS_URL: _u, UNIBUS_IDENTITY: _i, ...rest } = process.env;
  const env = { ...rest, UNIBUS_HOME: home, UNIBUS_PORT: String(port), UNIBUS_MONITOR_PORT: String(await freeLoopbackPort()) };
  const url = `nats://127.0.0.1:${port}`;
  const adminFile = join(home, "admin.id");
  const start = (): WatchedProcess => spawnWatched(process.execPath, [BIN, "up"], { env, label: "unibus up" });
  let up: WatchedProcess | undefined;
  try {
    // First start: provisions the state dir (and bundles the services).
    up = start();
    await up.waitFor("stdout", /Next: npx unibus micro ls/, READY_TIMEOUT_MS);
    await allServicesAnswer(url, adminFile, up);
    await new Promise((r) => setTimeout(r, opts.settleMs));
    const pid = up.child.pid ?? 0;
    const tree = await processTree(pid);
    const stackMb = tree.reduce((s, p) => s + p.rssKb, 0) / 1024;
    const natsMb = tree.filter((p) => p.name === "nats-server").reduce((s, p) => s + p.rssKb, 0) / 1024;
    const parts = tree.map((p) => `${p.name}(${p.pid}) ${Math.round(p.rssKb / 1024)} MB`).join(", ");

    up.child.kill("SIGTERM");
    if ((await up.exitCode(30_000)) !== 0) throw new Error(`unibus up did not stop cleanly:\n${up.output()}`);

    // Restart on the same state dir: the ready time a developer waits for.
    const spawnedAt = performance.now();
    up = start();
    const serverReadyAt = await up.waitFor("stdout", /nats-server pid \d+ ready/, READY_TIMEOUT_MS);
    const readyAt = await allServicesAnswer(url, adminFile, up);
    console.log(`  process tree: ${parts}`);
    return [
      { name: "P11 embedded stack RSS (÷ nats-server)", unit: "MB", unibus: stackMb, raw: natsMb, goal: `stack <= ${RSS_GOAL_MB} MB` },
      { name: "P11 restart to every service ready", unit: "ms", unibus: readyAt - spawnedAt, raw: serverReadyAt - spawnedAt, goal: `<= ${RESTART_GOAL_MS} ms` },
    ];
  } finally {
    if (up !== undefined && up.child.exitCode === null) {
      up.child.kill("SIGTERM");
      await up.exitCode(30_000).catch(() => up?.child.kill("SIGKILL"));
    }
    await rm(home, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const c of await runEmbeddedStack({ settleMs: numberArg("--settle-ms", 3_000) })) printCase(c);
}
