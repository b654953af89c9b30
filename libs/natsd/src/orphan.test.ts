import { spawn, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { NatsServerFile, PidIdentity, identifyServerPid, stopOrphanNatsServer } from "./orphan.js";
import { startNatsServer } from "./process.js";
import type { NatsServerProcess } from "./process.js";
import { WATCHDOG_SCRIPT, startNatsServerWatchdog } from "./watchdog.js";

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
  const server = await startNatsServer({ config: { host: "127.0.0.1", jetstream: { store_dir: join(dir, "js") } }, dir, name });
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
  it("stops a server still running on the dir in lame duck mode", async () => {
    const server = await start("orphan");
    const outcome = await stopOrphanNatsServer(server.dir);
    expect(outcome).toEqual({ pid: server.pid, action: "stopped", by: "lame-duck" });
    expect(await exitsWithin(server, 2_000)).toBeLessThan(2_000);
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

describe("nats-server watchdog", () => {
  it("stops the server within 2 s of its owner's pipe closing", async () => {
    const server = await start("watched");
    const dog = spawn(process.execPath, [WATCHDOG_SCRIPT, String(server.pid), server.configPath], { stdio: ["pipe", "pipe", "pipe"] });
    await new Promise<void>((resolve, reject) => {
      dog.stdout.on("data", (d: Buffer) => d.toString().includes("armed") && resolve());
      dog.once("exit", (code) => reject(new Error(`watchdog exited ${code}`)));
    });
    // What the kernel does when the owner dies, however it dies.
    dog.stdin.end();
    expect(await exitsWithin(server, 2_000)).toBeLessThan(2_000);
    expect(await new Promise((r) => dog.once("exit", r))).toBe(0);
  });

  it("refuses to arm on a pid that is not a nats-server on that config", async () => {
    const server = await start("refuse");
    const r = spawnSync(process.execPath, [WATCHDOG_SCRIPT, String(process.pid), server.configPath], { encoding: "utf8", input: "" });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("is not a nats-server");
    await expect(startNatsServerWatchdog({ pid: server.pid, configPath: join(root, "other.conf") })).rejects.toThrow(/watchdog did not start/);
  });

  it("an orderly stop of the watchdog leaves the server running", async () => {
    const server = await start("orderly");
    const dog = await startNatsServerWatchdog(server);
    await dog.stop();
    expect(await identifyServerPid(server.pid, server.configPath)).toBe(PidIdentity.Ours);
  });
});
