// `unibus check --cluster [--chaos]` against a real 3-node cluster (TLS
// routes) with the production callout, membership and keys services: the
// check passes through every seed. Its --chaos failover run is in
// check-failover.failover.test.ts (npm run test:chaos:failover).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExitCode, runCli } from "@unibus/cli";
import { writeIdentityFile } from "@unibus/crypto";
import { createKeysService } from "@unibus/keys";
import { startTestBus } from "@unibus/testbus";
import type { TestBus } from "@unibus/testbus";
import { recordingIo } from "../../libs/cli/src/test-io.js";

describe("unibus check --cluster on a 3-node cluster", () => {
  let bus: TestBus;
  let dir: string;
  let keys: { stop(): Promise<void> };
  let env: Record<string, string>;

  beforeAll(async () => {
    bus = await startTestBus({ nodes: 3, cluster: { routeTls: true } });
    keys = await createKeysService(await bus.serviceConnection("keys"), { logger: pino({ level: "silent" }) });
    dir = await mkdtemp(join(tmpdir(), "unibus-check-cluster-"));
    const identity = join(dir, "admin.id");
    await writeIdentityFile(identity, bus.adminIdentity);
    env = { UNIBUS_URL: bus.cluster!.urls.join(","), UNIBUS_IDENTITY: identity };
  }, 120_000);

  afterAll(async () => {
    await keys?.stop();
    await bus?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("--cluster runs the end-to-end check through every seed; one seed is refused as a usage error", async () => {
    const io = recordingIo({ env, cwd: dir });
    expect(await runCli(["check", "--cluster", "--messages", "50", "--json"], io), io.all()).toBe(ExitCode.ok);
    const report = JSON.parse(io.stdout.join("\n")) as { ok: boolean; rooms: { seed: string; received: number; lost: number }[] };
    expect(report.rooms.map((r) => r.seed).sort()).toEqual([...bus.cluster!.urls].sort());
    expect(report.rooms.every((r) => r.received === 50 && r.lost === 0)).toBe(true);

    const one = recordingIo({ env: { ...env, UNIBUS_URL: bus.cluster!.urls[0]! }, cwd: dir });
    expect(await runCli(["check", "--cluster"], one)).toBe(ExitCode.usage);
    expect(one.stderr.join("\n")).toMatch(/at least two/);
  }, 120_000);

  it("--chaos is refused unless the test environment names the command that stops a node", async () => {
    const io = recordingIo({ env, cwd: dir });
    expect(await runCli(["check", "--cluster", "--chaos"], io)).toBe(ExitCode.usage);
    expect(io.stderr.join("\n")).toMatch(/UNIBUS_CHAOS_STOP/);
  });
});
