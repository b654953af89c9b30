// `unibus check --cluster --chaos` against a real 3-node cluster (TLS routes)
// with the production callout, membership and keys services: it kills the
// receiver's node mid-stream and must still end with every message, none lost.
//
// Not part of `npm run test:chaos` (and so not of CI) while one failure mode
// is open: in some runs a service stops answering for more than the check's
// 45 s after a node that is not its own is killed (the JetStream leaders
// re-elect within seconds). Run it with `npm run test:chaos:failover`.
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

interface FailoverReport {
  stoppedUrl: string;
  sent: number;
  received: number;
  duplicates: number;
  fromHistory: number;
  resent: number;
  lost: number;
  failoverMs: number;
}

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

  it("--cluster --chaos: the receiver's node is killed mid-stream, the receiver fails over, zero loss", async () => {
    // The stop command maps the node's URL to its process: kill -9, as a crash.
    const cases = bus.cluster!.servers.map((s) => `${s.url}) kill -9 ${s.pid} ;;`).join(" ");
    // Node 0 is spared: the in-process services connect there first, and
    // this test is about the client's failover, not theirs.
    const io = recordingIo({ env: { ...env, UNIBUS_CHAOS_STOP: `case "$UNIBUS_CHAOS_URL" in ${cases} *) exit 3 ;; esac`, UNIBUS_CHAOS_SPARE: bus.cluster!.urls[0]! }, cwd: dir });
    const code = await runCli(["check", "--cluster", "--chaos", "--messages", "400", "--timeout", "45000", "--json"], io);
    expect(code, io.all()).toBe(ExitCode.ok);
    const { failover } = JSON.parse(io.stdout.join("\n")) as { failover: FailoverReport };
    const stopped = bus.cluster!.servers.findIndex((s) => s.url === failover.stoppedUrl);
    expect(stopped).toBeGreaterThan(0);
    expect(await bus.cluster!.servers[stopped]!.exited).toBeNull();
    expect(failover).toMatchObject({ sent: 400, received: 400, lost: 0 });
    expect(failover.failoverMs).toBeGreaterThan(0);
    console.info(`unibus check --cluster --chaos: ${JSON.stringify(failover)}`);
  }, 180_000);
});
