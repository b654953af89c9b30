// `unibus check --cluster [--chaos]` against a real 3-node cluster (TLS
// routes) with the production callout, membership and keys services: the
// check passes through every seed. Its --chaos failover run is in
// check-failover.failover.test.ts (also run alone by npm run test:chaos:failover).
import { describe, expect, it } from "vitest";
import { ExitCode, runCli } from "@unibus/cli";
import { recordingIo } from "@unibus/cli/test-io";
import { useCheckBus } from "./check-bus.js";

describe("unibus check --cluster on a 3-node cluster", () => {
  const ctx = useCheckBus();

  it("--cluster runs the end-to-end check through every seed; one seed is refused as a usage error", async () => {
    const io = recordingIo({ env: ctx.env, cwd: ctx.dir });
    expect(await runCli(["check", "--cluster", "--messages", "50", "--json"], io), io.all()).toBe(ExitCode.ok);
    const report = JSON.parse(io.stdout.join("\n")) as { ok: boolean; rooms: { seed: string; received: number; lost: number }[] };
    expect(report.rooms.map((r) => r.seed).sort()).toEqual([...ctx.bus.cluster!.urls].sort());
    expect(report.rooms.every((r) => r.received === 50 && r.lost === 0)).toBe(true);

    const one = recordingIo({ env: { ...ctx.env, UNIBUS_URL: ctx.bus.cluster!.urls[0]! }, cwd: ctx.dir });
    expect(await runCli(["check", "--cluster"], one)).toBe(ExitCode.usage);
    expect(one.stderr.join("\n")).toMatch(/at least two/);
  }, 120_000);

  it("--chaos is refused unless the test environment names the command that stops a node", async () => {
    const io = recordingIo({ env: ctx.env, cwd: ctx.dir });
    expect(await runCli(["check", "--cluster", "--chaos"], io)).toBe(ExitCode.usage);
    expect(io.stderr.join("\n")).toMatch(/UNIBUS_CHAOS_STOP/);
  });
});
