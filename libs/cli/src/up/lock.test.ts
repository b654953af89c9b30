import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { acquireHomeLock } from "./lock.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "unibus-cli-lock-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A pid that certainly does not run: a child that has already exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
  return Number(r.stdout);
}

describe("home lock", () => {
  it("a second holder is refused while the first one's process runs", async () => {
    const path = join(dir, "up.lock");
    // The parent of this test process is alive and is not us.
    await writeFile(path, `${process.ppid}\n`);
    await expect(acquireHomeLock(path)).rejects.toThrow(new RegExp(`pid ${process.ppid}`));
  });

  it("a lock left by a dead process is taken over", async () => {
    const path = join(dir, "up.lock");
    await writeFile(path, `${deadPid()}\n`);
    const lock = await acquireHomeLock(path);
    expect((await readFile(path, "utf8")).trim()).toBe(String(process.pid));
    await lock.release();
    await expect(stat(path)).rejects.toThrow();
  });

  it("release removes the file and the lock can be taken again", async () => {
    const path = join(dir, "up.lock");
    const first = await acquireHomeLock(path);
    await first.release();
    const second = await acquireHomeLock(path);
    await second.release();
  });
});

describe("home lock takeover waits for the dead holder's children", () => {
  /** A child that runs until killed; its own exit is not awaited by the test. */
  function sleeper(code = "setInterval(() => {}, 1000)"): ChildProcess {
    return spawn(process.execPath, ["-e", code], { stdio: "ignore" });
  }

  it("records children under the holder's pid, and release still removes the file", async () => {
    const path = join(dir, "up.lock");
    const lock = await acquireHomeLock(path);
    const child = sleeper();
    try {
      await lock.recordChildren([child.pid ?? 0]);
      const lines = (await readFile(path, "utf8")).trim().split("\n");
      expect(lines[0]).toBe(String(process.pid));
      expect(lines[1]).toMatch(new RegExp(`^child ${child.pid} \\d+$`));
      // A second start still sees the live holder.
      await expect(acquireHomeLock(path, process.pid + 1_000_000)).rejects.toThrow(/another `unibus up`/);
    } finally {
      child.kill("SIGKILL");
      await lock.release();
    }
    await expect(stat(path)).rejects.toThrow();
  });

  it("a child that exits in time is waited for, one that lingers is killed", async () => {
    const path = join(dir, "up.lock");
    const quitting = sleeper("setTimeout(() => {}, 300)");
    const lingering = sleeper();
    const lingeringExit = new Promise((r) => lingering.once("exit", (_code, signal) => r(signal)));
    const start = (c: ChildProcess): string => readFileSync(`/proc/${c.pid}/stat`, "utf8").split(") ")[1]?.split(" ")[19] ?? "-";
    await writeFile(path, `${deadPid()}\nchild ${quitting.pid} ${start(quitting)}\nchild ${lingering.pid} ${start(lingering)}\n`);
    const t0 = Date.now();
    const lock = await acquireHomeLock(path);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2_500);
    expect(quitting.exitCode).toBe(0);
    expect(await lingeringExit).toBe("SIGKILL");
    await lock.release();
  });

  it("a recorded pid now used by another process (other start time) is neither waited for nor signalled", async () => {
    const path = join(dir, "up.lock");
    const other = sleeper();
    try {
      await writeFile(path, `${deadPid()}\nchild ${other.pid} 1\n`);
      const t0 = Date.now();
      const lock = await acquireHomeLock(path);
      expect(Date.now() - t0).toBeLessThan(1_000);
      expect(other.exitCode).toBeNull();
      expect(other.signalCode).toBeNull();
      await lock.release();
    } finally {
      other.kill("SIGKILL");
    }
  });
});
