import { describe, expect, it } from "vitest";
import { runCli } from "./router.js";
import { recordingIo } from "./test-io.js";

function io() {
  return recordingIo({ cwd: "/nonexistent-cwd-for-tests", env: {} });
}

describe("unibus command line", () => {
  it("--help lists every command and exits 0", async () => {
    const out = io();
    expect(await runCli(["--help"], out)).toBe(0);
    const text = out.stdout.join("\n");
    for (const cmd of ["up", "identity", "micro"]) expect(text).toMatch(new RegExp(`^  ${cmd} `, "m"));
  });

  it("no command prints the help to stderr and exits 2", async () => {
    const out = io();
    expect(await runCli([], out)).toBe(2);
    expect(out.stderr.join("\n")).toContain("Usage: unibus <command>");
  });

  it("an unknown command exits 2 and points to --help", async () => {
    const out = io();
    expect(await runCli(["frobnicate"], out)).toBe(2);
    expect(out.stderr.join("\n")).toMatch(/unknown command: frobnicate[\s\S]*unibus --help/);
  });

  it.each([
    [["identity", "create", "--help"], "Usage: unibus identity create"],
    [["identity", "show", "-h"], "Usage: unibus identity show"],
    [["micro", "ls", "--help"], "Usage: unibus micro ls"],
    [["micro", "--help"], "Usage: unibus micro <command>"],
    [["up", "--help"], "Usage: unibus up"],
    [["help", "micro", "stats"], "Usage: unibus micro stats"],
    [["help", "identity"], "Usage: unibus identity <command>"],
  ])("per-command help: unibus %j prints its usage and exits 0", async (argv, usage) => {
    const out = io();
    expect(await runCli(argv, out)).toBe(0);
    expect(out.stdout.join("\n")).toContain(usage);
  });

  it("an unknown flag is a usage error naming the command's help", async () => {
    const out = io();
    expect(await runCli(["micro", "ls", "--bogus"], out)).toBe(2);
    expect(out.stderr.join("\n")).toMatch(/--bogus[\s\S]*unibus micro ls --help/);
  });

  it("a missing flag value and extra arguments are usage errors", async () => {
    expect(await runCli(["identity", "create", "--out"], io())).toBe(2);
    expect(await runCli(["identity", "show", "a.id", "b.id"], io())).toBe(2);
    expect(await runCli(["micro", "ls", "--timeout", "soon"], io())).toBe(2);
  });

  it("an unknown subcommand exits 2", async () => {
    const out = io();
    expect(await runCli(["micro", "explode"], out)).toBe(2);
    expect(out.stderr.join("\n")).toContain("unknown command: micro explode");
  });

  it("a bare command group prints its help to stderr and exits 2", async () => {
    const out = io();
    expect(await runCli(["identity"], out)).toBe(2);
    expect(out.stderr.join("\n")).toContain("Usage: unibus identity <command>");
  });
});
