// `unibus check --cluster --chaos` against a real 3-node cluster (TLS routes)
// with the production callout, membership and keys services: it kills the
// receiver's node mid-stream and must still end with every message, none lost.
//
// Not part of `npm run test:chaos` (and so not of CI) while one failure mode
// is open: in some runs a service stops answering for more than the check's
// 45 s after a node that is not its own is killed (the JetStream leaders
// re-elect within seconds). Run it with `npm run test:chaos:failover`.
import { describe, expect, it } from "vitest";
import { ExitCode, runCli } from "@unibus/cli";
import { recordingIo } from "@unibus/cli/test-io";
import { useCheckBus } from "./check-bus.js";

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
  const ctx = useCheckBus();

  it("--cluster --chaos: the receiver's node is killed mid-stream, the receiver fails over, zero loss", async () => {
    // The stop command maps the node's URL to its process: kill -9, as a crash.
    const cases = ctx.bus.cluster!.servers.map((s) => `${s.url}) kill -9 ${s.pid} ;;`).join(" ");
    // Node 0 is spared: the in-process services connect there first, and
    // this test is about the client's failover, not theirs.
    const io = recordingIo({ env: { ...ctx.env, UNIBUS_CHAOS_STOP: `case "$UNIBUS_CHAOS_URL" in ${cases} *) exit 3 ;; esac`, UNIBUS_CHAOS_SPARE: ctx.bus.cluster!.urls[0]! }, cwd: ctx.dir });
    const code = await runCli(["check", "--cluster", "--chaos", "--messages", "400", "--timeout", "45000", "--json"], io);
    expect(code, io.all()).toBe(ExitCode.ok);
    const { failover } = JSON.parse(io.stdout.join("\n")) as { failover: FailoverReport };
    const stopped = ctx.bus.cluster!.servers.findIndex((s) => s.url === failover.stoppedUrl);
    expect(stopped).toBeGreaterThan(0);
    expect(await ctx.bus.cluster!.servers[stopped]!.exited).toBeNull();
    expect(failover).toMatchObject({ sent: 400, received: 400, lost: 0 });
    expect(failover.failoverMs).toBeGreaterThan(0);
    console.info(`unibus check --cluster --chaos: ${JSON.stringify(failover)}`);
  }, 180_000);
});
