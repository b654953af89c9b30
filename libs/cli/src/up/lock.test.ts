import { spawnSync } from "node:child_process";
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
