import { describe, expect, it } from "vitest";
import { ExitCode } from "../errors.js";
import { runCli } from "../router.js";
import { recordingIo } from "../test-io.js";

// Usage is checked before any connection: no bus runs here.
const io = () => recordingIo({ env: { UNIBUS_URL: "nats://127.0.0.1:1" }, cwd: "/tmp" });

describe("users / rooms / admin command lines", () => {
  it.each([
    [["users", "add"], /missing <principal>/],
    [["users", "add", "not-a-key", "--handle", "x"], /not a principal: not-a-key/],
    [["users", "add", "UAL65MH5PVUR535JMYHVWZY5JFIDCDWWOIDG4MKLXNOQNJ56TIYINMG2", "--handle", "x", "--role", "root"], /--role must be admin or member/],
    [["rooms", "invite", "r1"], /missing <principal>/],
    [["rooms", "create", "a", "b"], /unexpected argument: b/],
    [["admin", "bootstrap", "--nope"], /Unknown option/],
  ])("unibus %j is a usage error (exit 2)", async (argv, message) => {
    const rec = io();
    expect(await runCli(argv, rec)).toBe(ExitCode.usage);
    expect(rec.stderr.join("\n")).toMatch(message);
  });

  it("lists the new command groups in the root help", async () => {
    const rec = io();
    expect(await runCli(["--help"], rec)).toBe(ExitCode.ok);
    for (const name of ["admin", "users", "rooms"]) expect(rec.stdout.join("\n")).toContain(`  ${name} `);
  });
});
