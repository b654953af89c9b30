import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { pauseProcess } from "./pause.js";

describe("pauseProcess", () => {
  let child: ReturnType<typeof spawn> | undefined;
  afterEach(async () => {
    const c = child;
    child = undefined;
    if (c?.pid !== undefined && c.exitCode === null && c.signalCode === null) {
      const exited = once(c, "exit");
      c.kill("SIGCONT");
      c.kill("SIGKILL");
      await exited;
    }
  });

  it("returns only once a busy multi-threaded process is stopped, and it runs again after SIGCONT", async () => {
    // A busy main thread plus libuv's worker threads: the case where the bare signal lands late.
    child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000); for (;;) { require('node:crypto').randomBytes(1024); if (Date.now() % 1000 === 0) await 0; }"], { stdio: "ignore" });
    await once(child, "spawn");
    const pid = child.pid!;
    await pauseProcess(pid);
    const state = (): string => {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    };
    expect(state()).toBe("T");
    child.kill("SIGCONT");
    await expect.poll(state, { timeout: 5_000 }).not.toBe("T");
  });

  it("fails for a process that is not there", async () => {
    await expect(pauseProcess(2 ** 22 + 7)).rejects.toThrow();
  });
});
