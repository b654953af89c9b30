import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import type { Writable } from "node:stream";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { NatsServerFile, PidIdentity, SINGLE_NODE_LAME_DUCK, identifyServerPid, stopOrphanNatsServer } from "./orphan.js";
import { startNatsServer } from "./process.js";
import type { NatsServerProcess } from "./process.js";
import { WATCHDOG_SCRIPT, guardLine, startBusWatchdog } from "./watchdog.js";

let root: string;
const started: NatsServerProcess[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "natsd-orphan-"));
});
afterEach(async () => {
  await Promise.all(started.splice(0).map((s) => s.stop()));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function start(name: string): Promise<NatsServerProcess> {
  const dir = join(root, name);
  // The lame duck settings `unibus up` gives its server.
  const server = await startNatsServer({ config: { host: "127.0.0.1", ...SINGLE_NODE_LAME_DUCK, jetstream: { store_dir: join(dir, "js") } }, dir, name });
  started.push(server);
  return server;
}

/** A pid that certainly does not run: a child that has already exited. */
function deadPid(): number {
  return Number(spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" }).stdout);
}

/** Resolves with how long `server` took to exit, or rejects after `ms`. */
async function exitsWithin(server: NatsServerProcess, ms: number): Promise<number> {
  const t0 = Date.now();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([server.exited, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`server still running after ${ms} ms`)), ms)))]);
  clearTimeout(timer);
  return Date.now() - t0;
}

/** A protocol-level client on `port` (CONNECT, PING, PONG seen) recording what the server sends until it closes. */
async function rawClient(port: number): Promise<{ received(): string; closed: Promise<void> }> {
  const socket = tcpConnect({ host: "127.0.0.1", port });
  let text = "";
  socket.setEncoding("utf8");
  socket.on("data", (d: string) => (text += d));
  socket.on("error", () => undefined);
  const closed = new Promise<void>((r) => socket.once("close", () => r()));
  // protocol 1: the server sends this client INFO updates, lame duck among them.
  socket.write('CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n');
  await new Promise<void>((resolve, reject) => {
    socket.on("data", () => text.includes("PONG") && resolve());
    void closed.then(() => reject(new Error(`server closed the client: ${text}`)));
  });
  return { received: () => text, closed };
}

/** A watchdog on `server` spawned by hand, so the test holds its stdin (the owner's pipe). */
async function armed(server: NatsServerProcess): Promise<{ stdin: Writable; exited: Promise<number | null> }> {
  const dog = spawn(process.execPath, [WATCHDOG_SCRIPT, String(server.pid), server.configPath], { stdio: ["pipe", "pipe", "pipe"] });
  // Listened for from the start: the watchdog may exit before the test gets to ask.
  const exited = new Promise<number | null>((r) => dog.once("exit", (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    dog.stdout.on("data", (d: Buffer) => d.toString().includes("armed") && resolve());
    void exited.then((code) => reject(new Error(`watchdog exited ${code}`)));
  });
  return { stdin: dog.stdin, exited };
}

/** A node child in its own process group (as the supervisor starts services); `ready` once it printed "up". */
function nodeChild(code: string): { child: ChildProcess; pid: number; ready: Promise<void>; exited: Promise<NodeJS.Signals | number | null> } {
  const child = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "pipe", "ignore"], detached: true });
  const exited = new Promise<NodeJS.Signals | number | null>((r) => child.once("exit", (c, sig) => r(sig ?? c)));
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout?.on("data", (d: Buffer) => d.toString().includes("up") && resolve());
    void exited.then((how) => reject(new Error(`child exited early: ${String(how)}`)));
  });
  return { child, pid: child.pid ?? 0, ready, exited };
}

describe("identifyServerPid", () => {
  it("tells our server from another process and from a dead pid", async () => {
    const server = await start("identify");
    expect(await identifyServerPid(server.pid, server.configPath)).toBe(PidIdentity.Ours);
    // The same server is not "ours" for another dir's config: never signal a server we did not start on this store.
    expect(await identifyServerPid(server.pid, join(root, "elsewhere", NatsServerFile.config))).toBe(PidIdentity.Other);
    expect(await identifyServerPid(process.pid, server.configPath)).toBe(PidIdentity.Other);
    expect(await identifyServerPid(deadPid(), server.configPath)).toBe(PidIdentity.Gone);
  });
});

describe("stopOrphanNatsServer", () => {
  it("tries lame duck first and returns only once the server is gone", async () => {
    const server = await start("orphan");
    // A connected client is told when the server enters lame duck mode
    // (`"ldm":true` in an INFO); an orderly SIGTERM or a SIGKILL tells it nothing.
    const client = await rawClient(server.port);
    const outcome = await stopOrphanNatsServer(server.dir);
    // How it ended depends on how loaded the machine is; that it ended does not.
    expect(outcome).toMatchObject({ pid: server.pid, action: "stopped" });
    expect(["lame-duck", "SIGTERM", "SIGKILL"]).toContain(outcome.by);
    expect(await identifyServerPid(server.pid, server.configPath)).toBe(PidIdentity.Gone);
    await client.closed;
    expect(client.received()).toMatch(/^INFO \{.*"ldm":true/m);
  });

  it("lame duck alone ends a server whose clients are gone", { timeout: 60_000 }, async () => {
    const server = await start("idle");
    // A generous bound: with no client the server exits at once, but a loaded machine may be slow to say so.
    expect(await stopOrphanNatsServer(server.dir, { lameDuckMs: 45_000 })).toEqual({ pid: server.pid, action: "stopped", by: "lame-duck" });
  });

  it("does nothing without a pid file", async () => {
    expect(await stopOrphanNatsServer(join(root, "empty"))).toEqual({ action: "none" });
  });

  it("never signals a pid that is not our server: a reused pid, a dead one, garbage", async () => {
    const bystander = await start("bystander");
    const dir = join(root, "stale");
    await mkdir(dir, { recursive: true });
    // Our own pid and another dir's live server stand for reused pids.
    for (const content of [`${process.pid}\n`, `${bystander.pid}\n`, `${deadPid()}\n`, "not a pid\n", "1\n"]) {
      await writeFile(join(dir, NatsServerFile.pid), content);
      const outcome = await stopOrphanNatsServer(dir);
      expect(outcome.action, content).toBe("stale");
    }
    // Neither got a signal: this process would have died of SIGUSR2's default action, the bystander gone lame duck.
    expect(await identifyServerPid(bystander.pid, bystander.configPath)).toBe(PidIdentity.Ours);
  });
});

describe("bus watchdog", () => {
  it("stops the server within 2 s of its owner's pipe closing", async () => {
    const server = await start("watched");
    const dog = await armed(server);
    // What the kernel does when the owner dies, however it dies.
    dog.stdin.end();
    expect(await exitsWithin(server, 2_000)).toBeLessThan(2_000);
    expect(await dog.exited).toBe(0);
  });

  it("also ends the guarded children within 2 s, a child with a blocked event loop included", async () => {
    const server = await start("guarded");
    // Busy children cannot act on their own lifeline: a loop that never yields, with a SIGTERM handler that never runs.
    const busy = nodeChild("process.on('SIGTERM', () => {}); console.log('up'); for (;;) {}");
    const idle = nodeChild("console.log('up'); setInterval(() => {}, 1000);");
    await Promise.all([busy.ready, idle.ready]);
    const dog = await armed(server);
    // Only the last set counts: an exited child drops out of it.
    dog.stdin.write(guardLine([busy.pid]));
    dog.stdin.write(guardLine([busy.pid, idle.pid]));
    const t0 = Date.now();
    dog.stdin.end();
    const [busyEnd, idleEnd] = await Promise.all([busy.exited, idle.exited, server.exited]);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(busyEnd).toBe("SIGKILL");
    expect(idleEnd).toBe("SIGTERM");
    expect(await dog.exited).toBe(0);
  });

  it("never signals a guarded pid whose start time is not the one it was told, or unknown", async () => {
    const server = await start("reused");
    const reused = nodeChild("console.log('up'); setInterval(() => {}, 1000);");
    const unknown = nodeChild("console.log('up'); setInterval(() => {}, 1000);");
    await Promise.all([reused.ready, unknown.ready]);
    const dog = await armed(server);
    // A pid recorded for an earlier process, and one whose start time could not be read.
    dog.stdin.write(guardLine([reused.pid, unknown.pid], (p) => (p === reused.pid ? "1" : undefined)));
    dog.stdin.end();
    await server.exited;
    expect(await dog.exited).toBe(0);
    expect([reused.child.exitCode, reused.child.signalCode, unknown.child.exitCode, unknown.child.signalCode]).toEqual([null, null, null, null]);
    reused.child.kill("SIGKILL");
    unknown.child.kill("SIGKILL");
    await Promise.all([reused.exited, unknown.exited]);
  });

  it("refuses to arm on a pid that is not a nats-server on that config", async () => {
    const server = await start("refuse");
    const r = spawnSync(process.execPath, [WATCHDOG_SCRIPT, String(process.pid), server.configPath], { encoding: "utf8", input: "" });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("is not a nats-server");
    await expect(startBusWatchdog({ pid: server.pid, configPath: join(root, "other.conf") })).rejects.toThrow(/bus watchdog did not start/);
  });

  it("an orderly stop of the watchdog leaves the server running", async () => {
    const server = await start("orderly");
    const dog = await startBusWatchdog(server);
    await dog.stop();
    expect(await identifyServerPid(server.pid, server.configPath)).toBe(PidIdentity.Ours);
  });
});
