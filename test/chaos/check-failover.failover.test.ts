// `unibus check --cluster --chaos` against a real 3-node cluster (TLS routes)
// with the production callout, membership and keys services: it kills the
// receiver's node mid-stream and must still end with every message, none lost.
//
// The node killed is made, beforehand, the leader of every bucket the keys
// and membership services answer from: the worst case for the control
// plane, every one of those buckets elects a new leader while the client
// fails over. (The check's keys service once ran with one replica per
// bucket: when the killed node held `room_keys`, no share could be read
// again and the check stalled on "the bus service did not answer in time".)
import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { ExitCode, runCli } from "@unibus/cli";
import type { FailoverCheck } from "@unibus/cli";
import { roomMembers } from "@unibus/kit";
import { eventually } from "@unibus/testing";
import { recordingIo } from "@unibus/cli/test-io";
import { useCheckBus } from "./check-bus.js";

/** The streams behind every request the check makes of the keys and membership services. */
const CONTROL_STREAMS = ["KV_room_keys", "KV_agreement_keys", "KV_nonces", "KV_users", "KV_rooms", "KV_members", "KV_rooms_by_member", "KV_room_log"] as const;

describe("unibus check --cluster on a 3-node cluster", () => {
  const ctx = useCheckBus();

  it("--cluster --chaos: the receiver's node, leader of every control-plane bucket, is killed mid-stream; zero loss", async () => {
    const cluster = ctx.bus.cluster!;
    // Every bucket the keys service answers from survives the loss of any one node.
    for (const kv of [ctx.keys.buckets.roomKeys, ctx.keys.buckets.agreementKeys]) expect((await kv.status()).replicas).toBe(3);

    // Node 1 is the victim: node 0 is spared (the in-process services connect
    // there first; this test is about the client's failover, not theirs).
    const victim = 1;
    const victimName = `${cluster.name}-n${victim + 1}`;
    const operator = await ctx.bus.operatorConnection();
    const jsm = await jetstreamManager(operator);
    for (const stream of CONTROL_STREAMS) {
      await eventually(
        async () => {
          const leader = await jsm.streams.info(stream).then((i) => i.cluster?.leader, () => undefined);
          // Asked again on every poll: a stepdown during an election is refused.
          if (leader !== undefined && leader !== victimName) {
            await operator.request(`$JS.API.STREAM.LEADER.STEPDOWN.${stream}`, JSON.stringify({ placement: { preferred: victimName } }), { timeout: 5_000 }).catch(() => undefined);
          }
          return leader;
        },
        (leader) => leader === victimName,
        { timeoutMs: 30_000, intervalMs: 250, what: `${stream} led by ${victimName}` },
      );
    }

    // The stop command maps the node's URL to its process: kill -9, as a crash.
    const cases = cluster.servers.map((s) => `${s.url}) kill -9 ${s.pid} ;;`).join(" ");
    const spare = cluster.urls.filter((_, i) => i !== victim).join(",");
    const io = recordingIo({ env: { ...ctx.env, UNIBUS_CHAOS_STOP: `case "$UNIBUS_CHAOS_URL" in ${cases} *) exit 3 ;; esac`, UNIBUS_CHAOS_SPARE: spare }, cwd: ctx.dir });
    const code = await runCli(["check", "--cluster", "--chaos", "--messages", "400", "--timeout", "45000", "--json"], io);
    expect(code, io.all()).toBe(ExitCode.ok);
    const { failover } = JSON.parse(io.stdout.join("\n")) as { failover: FailoverCheck };
    expect(failover.stoppedUrl).toBe(cluster.urls[victim]);
    expect(await cluster.servers[victim]!.exited).toBeNull();
    expect(failover).toMatchObject({ sent: 400, received: 400, lost: 0 });
    expect(failover.failoverMs).toBeGreaterThan(0);
    console.info(`unibus check --cluster --chaos: ${JSON.stringify(failover)}`);
    // Which path decided the reconnect's logins: refusals behind the fence show up here as `behind`.
    console.info(`callout directories (per node): ${JSON.stringify(ctx.bus.directories.map((d) => ("stats" in d ? d.stats : "leader reads")))}`);

    // The keys service's fenced copy of `members` outlives the kill of the
    // node that led its bucket: a watcher stuck behind is replaced, so it
    // vouches for the bucket again and room listings stop being refused.
    const { members } = ctx.keys.buckets.membership;
    const t0 = Date.now();
    await eventually(() => roomMembers(members, failover.roomId).catch(() => null), (m) => m !== null, { timeoutMs: 30_000, intervalMs: 250, what: "the keys service's members copy caught up" });
    console.info(`keys members copy vouching again ${Date.now() - t0} ms after the check`);
  }, 180_000);
});
