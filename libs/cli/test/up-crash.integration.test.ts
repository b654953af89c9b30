// `unibus up` killed outright (SIGKILL, as the OOM killer does): nothing it
// started may outlive it, and the next start on the same home must neither
// share the JetStream store with an old server nor lose state.
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { eventually, freeLoopbackPort, spawnWatched } from "@unibus/testing";
import type { WatchedProcess } from "@unibus/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

const BIN = fileURLToPath(new URL("../bin/unibus.mjs", import.meta.url));

type Up = WatchedProcess;

function startUp(env: NodeJS.ProcessEnv): Up {
  return spawnWatched(process.execPath, [BIN, "up"], { env, label: "unibus up" });
}

/** Polls `probe` until it returns a value other than undefined; throws `why()` (the output then) after `ms`. */
async function until<T>(probe: () => T | undefined, ms: number, why: () => string): Promise<T> {
  const v = await eventually(probe, (x) => x !== undefined, { timeoutMs: ms, intervalMs: 50 }).catch(() => {
    throw new Error(why());
  });
  return v as T;
}

async function waitReady(up: Up, ms = 40_000): Promise<void> {
  await until(
    () => (up.output().includes("Stop: Ctrl-C") ? true : up.child.exitCode !== null ? false : undefined),
    ms,
    () => `unibus up not ready after ${ms} ms:\n${up.output()}`,
  ).then((ok) => {
    if (!ok) throw new Error(`unibus up exited early:\n${up.output()}`);
  });
}

/** Every process whose argv or environment names `home`: the server, its watchdog, services and their helpers. */
function processesOf(home: string): { pid: number; argv: string }[] {
  const found: { pid: number; argv: string }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      // Zombies (empty argv) have exited; only their parent has not reaped them.
      if (argv === "") continue;
      const environ = readFileSync(`/proc/${entry}/environ`, "utf8");
      if (argv.includes(home) || environ.split("\0").includes(`UNIBUS_HOME=${home}`)) found.push({ pid: Number(entry), argv: argv.replaceAll("\0", " ").trim() });
    } catch {
      // Exited while we looked.
    }
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8") !== "";
  } catch {
    return false;
  }
}

describe("unibus up killed with SIGKILL (real processes)", () => {
  let home: string;
  let env: NodeJS.ProcessEnv;
  const ups: Up[] = [];

  beforeEach(async () => {
    home = await mkdtemp(join(tmpdir(), "unibus-crash-"));
    const { UNIBUS_URL: _u, UNIBUS_IDENTITY: _i, ...rest } = process.env;
    env = { ...rest, UNIBUS_HOME: home, UNIBUS_PORT: String(await freeLoopbackPort()), UNIBUS_MONITOR_PORT: String(await freeLoopbackPort()), UNIBUS_WS_PORT: String(await freeLoopbackPort()) };
  });
  afterEach(async () => {
    // Whatever a failed assertion left behind: no stray server may hold the port or the store.
    for (const up of ups.splice(0)) if (up.child.exitCode === null) up.child.kill("SIGKILL");
    for (const p of processesOf(home)) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    await rm(home, { recursive: true, force: true });
  });

  it("leaves no process within 2 s, and the next start on the home reuses its state", { timeout: 120_000 }, async () => {
    const first = startUp(env);
    ups.push(first);
    await waitReady(first);
    const admin = /bootstrapped admin #0 (U[A-Z0-9]+)/.exec(first.output())?.[1];
    expect(admin, first.output()).toBeDefined();
    // The lock names the services process (the default runs every service in one), so a start taking over would wait for it.
    expect((await readFile(join(home, "up.lock"), "utf8")).match(/^child \d+ \d+$/gm)?.length).toBeGreaterThanOrEqual(1);
    const before = processesOf(home);
    // The server, its watchdog and the services.
    expect(before.some((p) => p.argv.includes("nats-server -c"))).toBe(true);
    expect(before.some((p) => p.argv.includes("watchdog.mjs"))).toBe(true);
    expect(before.some((p) => p.argv.includes("embedded-services.mjs"))).toBe(true);

    const killedAt = Date.now();
    first.child.kill("SIGKILL");
    await first.exited;
    await until(
      () => (processesOf(home).length === 0 ? true : undefined),
      2_000 - (Date.now() - killedAt),
      () => `still running ${Date.now() - killedAt} ms after SIGKILL:\n${processesOf(home).map((p) => `${p.pid} ${p.argv}`).join("\n")}`,
    );
    const tookMs = Date.now() - killedAt;
    expect(tookMs).toBeLessThanOrEqual(2_000);

    const second = startUp(env);
    ups.push(second);
    await waitReady(second);
    expect(second.output()).not.toContain("created");
    expect(second.output()).toContain(`admin #0 exists: ${admin}`);
    expect(second.output()).not.toContain("earlier nats-server");
    second.child.kill("SIGTERM");
    expect(await second.exited).toBe(0);
    expect(processesOf(home)).toEqual([]);
  });

  it("stops a nats-server left running on the store (lame duck) before starting a new one", { timeout: 120_000 }, async () => {
    const first = startUp(env);
    ups.push(first);
    await waitReady(first);
    const admin = /bootstrapped admin #0 (U[A-Z0-9]+)/.exec(first.output())?.[1];
    const serverPid = Number((await readFile(join(home, "server", "nats-server.pid"), "utf8")).trim());
    expect(alive(serverPid)).toBe(true);
    // Simulate an orphan: the watchdog dies first (as if OOM-killed too), then the supervisor.
    const watchdog = processesOf(home).find((p) => p.argv.includes("watchdog.mjs"));
    expect(watchdog).toBeDefined();
    process.kill(watchdog?.pid ?? 0, "SIGKILL");
    await until(() => (alive(watchdog?.pid ?? 0) ? undefined : true), 2_000, () => "watchdog did not die");
    first.child.kill("SIGKILL");
    await first.exited;
    // Services follow their supervisor; the orphaned server does not.
    await until(
      () => (processesOf(home).every((p) => p.pid === serverPid) ? true : undefined),
      2_000,
      () => `services still running:\n${processesOf(home).map((p) => `${p.pid} ${p.argv}`).join("\n")}`,
    );
    expect(alive(serverPid)).toBe(true);

    const second = startUp(env);
    ups.push(second);
    await waitReady(second);
    expect(second.output()).toMatch(new RegExp(`stopped the earlier nats-server \\(pid ${serverPid}, (lame-duck|SIGTERM|SIGKILL)\\)`));
    // Lame duck suffices for a server whose clients are gone.
    expect(second.output()).toContain(`(pid ${serverPid}, lame-duck)`);
    expect(alive(serverPid)).toBe(false);
    const servers = processesOf(home).filter((p) => p.argv.includes("nats-server -c"));
    expect(servers).toHaveLength(1);
    expect(second.output()).toContain(`admin #0 exists: ${admin}`);
    second.child.kill("SIGTERM");
    expect(await second.exited).toBe(0);
  });
});
