import { describe, expect, it } from "vitest";
import { eventually } from "@unibus/testing";
import { Supervisor, backoffDelay } from "./supervisor.js";
import type { ChildSpec } from "./supervisor.js";

function nodeChild(name: string, code: string): ChildSpec {
  return { name, command: process.execPath, args: ["-e", code], env: { PATH: process.env.PATH }, cwd: process.cwd() };
}

function collector() {
  const lines: string[] = [];
  const notices: string[] = [];
  return { lines, notices, events: { line: (n: string, _s: string, l: string) => void lines.push(`${n}:${l}`), notice: (m: string) => void notices.push(m) } };
}

/** The shared bounded poll, on a condition. */
const until = (cond: () => boolean): Promise<boolean> => eventually(cond, (ok) => ok);

describe("supervisor", () => {
  it("restart delays grow exponentially up to the cap", () => {
    const p = { initialMs: 500, maxMs: 30_000, resetAfterMs: 10_000 };
    expect([0, 1, 2, 3, 6, 7, 50].map((a) => backoffDelay(p, a))).toEqual([500, 1000, 2000, 4000, 30_000, 30_000, 30_000]);
  });

  it("a crashed child is restarted with backoff and the crash is reported", async () => {
    const c = collector();
    const sup = new Supervisor([nodeChild("crashy", "console.log('hello'); process.exit(3)")], c.events, {
      backoff: { initialMs: 50, maxMs: 200, resetAfterMs: 60_000 },
    });
    sup.start();
    await until(() => (sup.restarts().get("crashy") ?? 0) >= 3);
    await sup.stop();
    expect(c.lines.filter((l) => l === "crashy:hello").length).toBeGreaterThanOrEqual(3);
    expect(c.notices[0]).toMatch(/crashy exited with code 3 .* restarting in 50 ms/);
    expect(c.notices[1]).toMatch(/restarting in 100 ms/);
  });

  it("stop sends SIGTERM and a child that drains exits without being killed", async () => {
    const c = collector();
    const code = "process.on('SIGTERM', () => { console.log('draining'); setTimeout(() => process.exit(0), 50); }); console.log('up'); setInterval(() => {}, 1000);";
    const sup = new Supervisor([nodeChild("svc", code)], c.events, { stopGraceMs: 3_000 });
    sup.start();
    await until(() => c.lines.includes("svc:up"));
    await sup.stop();
    expect(c.lines).toContain("svc:draining");
    expect(c.notices.some((n) => n.includes("killing"))).toBe(false);
    expect(sup.restarts().get("svc")).toBe(0);
  });

  it("a child that ignores SIGTERM is killed after the grace period", async () => {
    const c = collector();
    const code = "process.on('SIGTERM', () => {}); console.log('up'); setInterval(() => {}, 1000);";
    const sup = new Supervisor([nodeChild("stubborn", code)], c.events, { stopGraceMs: 300 });
    sup.start();
    await until(() => c.lines.includes("stubborn:up"));
    const t0 = Date.now();
    await sup.stop();
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(c.notices.some((n) => /stubborn did not stop .* killing it/.test(n))).toBe(true);
    expect(sup.pids().size).toBe(0);
  });

  it("gives every child the lifeline: a pipe on fd 3, named in its environment", async () => {
    const c = collector();
    const code = "const s = require('fs').fstatSync(3); console.log('fd', process.env.UNIBUS_PARENT_FD, s.isSocket() || s.isFIFO()); setInterval(() => {}, 1000);";
    const sup = new Supervisor([nodeChild("svc", code)], c.events, { stopGraceMs: 1_000 });
    sup.start();
    await until(() => c.lines.some((l) => l.startsWith("svc:fd")));
    await sup.stop();
    expect(c.lines).toContain("svc:fd 3 true");
  });

  it("reports the running children's pids as they start and exit", async () => {
    const c = collector();
    const seen: (readonly number[])[] = [];
    const sup = new Supervisor([nodeChild("svc", "console.log('up'); setInterval(() => {}, 1000);")], c.events, {
      stopGraceMs: 1_000,
      onChildrenChanged: (pids) => seen.push(pids),
    });
    sup.start();
    await until(() => c.lines.includes("svc:up"));
    const pid = sup.pids().get("svc");
    expect(seen).toEqual([[pid]]);
    await sup.stop();
    expect(seen).toEqual([[pid], []]);
  });
});
