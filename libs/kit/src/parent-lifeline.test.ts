import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { describe, expect, it } from "vitest";
import { eventually } from "@unibus/testing";
import { PARENT_LIFELINE_FD_ENV, PARENT_LIFELINE_PRELOAD } from "./parent-lifeline.js";

interface Ran {
  readonly child: ChildProcess;
  out(): string;
  err(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A node child preloaded with the lifeline, fd 3 a pipe from us (`lifeline: "none"`: no fd 3). */
function run(code: string, fdEnv: string | undefined, lifeline: "pipe" | "none" = "pipe"): Ran {
  const env: NodeJS.ProcessEnv = { PATH: process.env["PATH"] };
  if (fdEnv !== undefined) env[PARENT_LIFELINE_FD_ENV] = fdEnv;
  const child = spawn(process.execPath, ["--import", PARENT_LIFELINE_PRELOAD, "-e", code], {
    env,
    stdio: lifeline === "pipe" ? ["ignore", "pipe", "pipe", "pipe"] : ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once("exit", (code, signal) => r({ code, signal })));
  return { child, out: () => out, err: () => err, exited };
}

/** The shared bounded poll, on a condition. */
const until = (cond: () => boolean): Promise<boolean> => eventually(cond, (ok) => ok);

/** What the kernel does to the child's lifeline when the supervisor dies, however it dies. */
function closeLifeline(r: Ran): void {
  (r.child.stdio[3] as NodeJS.WritableStream & { destroy(): void }).destroy();
}

describe("parent lifeline preload", () => {
  it("turns the supervisor's death into the child's SIGTERM, then exits within the bound", async () => {
    // A drain that never finishes: the hard bound must end it.
    const r = run("process.on('SIGTERM', () => console.log('draining')); console.log('up', process.env.UNIBUS_PARENT_FD ?? 'unset'); setInterval(() => {}, 1000);", "3");
    await until(() => r.out().includes("up"));
    // Not passed on to grandchildren, whose fd 3 is some other file.
    expect(r.out()).toContain("up unset");
    const t0 = Date.now();
    closeLifeline(r);
    expect(await r.exited).toEqual({ code: 1, signal: null });
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(r.out()).toContain("draining");
  });

  it("a child still loading (no SIGTERM handler yet) dies at once", async () => {
    const r = run("console.log('up'); setInterval(() => {}, 1000);", "3");
    await until(() => r.out().includes("up"));
    closeLifeline(r);
    expect(await r.exited).toEqual({ code: null, signal: "SIGTERM" });
  });

  it("a child whose drain finishes exits on its own terms", async () => {
    const r = run("process.on('SIGTERM', () => process.exit(0)); console.log('up'); setInterval(() => {}, 1000);", "3");
    await until(() => r.out().includes("up"));
    closeLifeline(r);
    expect(await r.exited).toEqual({ code: 0, signal: null });
  });

  it("without the variable the child runs unwatched", async () => {
    const r = run("console.log('ran')", undefined, "none");
    expect(await r.exited).toEqual({ code: 0, signal: null });
    expect(r.out()).toContain("ran");
  });

  it.each([
    ["2", "must be a file descriptor >= 3"],
    ["three", "must be a file descriptor >= 3"],
    ["9", "is not an open pipe"],
  ])("refuses to run with %s as the lifeline", async (fd, message) => {
    const r = run("console.log('ran')", fd, "none");
    expect(await r.exited).toEqual({ code: 1, signal: null });
    expect(r.err()).toContain(message);
    expect(r.out()).not.toContain("ran");
  });
});
