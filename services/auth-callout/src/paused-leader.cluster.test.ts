import { describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { createInbox } from "@nats-io/transport-node";
import { pino } from "pino";
import { SigningKey } from "@unibus/crypto";
import { checkLoops, createReplicatedKv, eventually, retryUntil } from "@unibus/testing";
import { connectedClusterForSuite } from "@unibus/testing/suite";
import { KvPrincipalDirectory } from "./store/directory.js";
import type { PrincipalDirectory } from "./store/directory.js";
import { WatchedDirectory } from "./store/watched-directory.js";

const logger = pino({ level: "silent" });

function record(principal: string, status: "active" | "revoked"): string {
  return JSON.stringify({ principal, handle: "a", role: "member", status, addedAt: new Date(0).toISOString(), addedBy: principal });
}

/** A lookup of `principal` as a verdict: still active (old), revoked (current); anything else is a refusal. */
function lookupOf(dir: PrincipalDirectory, principal: string): () => Promise<"old" | "current"> {
  return async () => {
    const status = (await dir.lookup(principal))?.user.status;
    if (status === "active") return "old";
    if (status === "revoked") return "current";
    throw new Error(`no record for ${principal}`);
  };
}

describe("the watched directory behind a stream leader paused past an election, then resumed", () => {
  const bus = connectedClusterForSuite(3);

  it("admits no lookup started after a revoke the new leader acknowledged, through the resumed node that still answers reads as leader", async () => {
    const alice = SigningKey.generate().principal;
    const users = await createReplicatedKv(bus.conns[0]!, "users", { allow_direct: false });
    const rooms = await createReplicatedKv(bus.conns[0]!, "rooms_by_member", { allow_direct: false });
    // A fresh R3 stream answers puts once its raft group has a leader ("no responders" until then).
    await retryUntil(() => users.put(alice, record(alice, "active")), { timeoutMs: 15_000, intervalMs: 100 });
    await retryUntil(() => rooms.put("nobody", JSON.stringify({})), { timeoutMs: 15_000, intervalMs: 100 });
    const leaderName = (await users.status()).streamInfo.cluster?.leader;
    const leader = bus.cluster.nodeIndex(leaderName);
    expect(leader).toBeGreaterThanOrEqual(0);
    const other = (leader + 1) % 3;
    const otherUsers: KV = await new Kvm(bus.conns[other]!).open("users", { allow_direct: false });

    // The callout of the paused node, connected to that node only (as in
    // production), deciding with the watched directory; beside it the
    // per-login leader reads the watched directory no longer falls back to.
    const pkvm = new Kvm(bus.conns[leader]!);
    const pUsers = await pkvm.open("users", { allow_direct: false });
    const pRooms = await pkvm.open("rooms_by_member", { allow_direct: false });
    const watched = await WatchedDirectory.start(pUsers, pRooms, { logger });
    const leaderReads = new KvPrincipalDirectory(pUsers, pRooms);
    // Refused while the copy's first replay is behind its fence (a loaded machine): ask again.
    await eventually(() => watched.lookup(alice).catch(() => null), (e) => e?.user.status === "active", { timeoutMs: 10_000, what: "alice active in the fenced copy" });

    // Writes through another node keep append-entry responses in flight at the freeze.
    let loading = true;
    const load = Promise.all(
      [0, 1, 2, 3].map(async (w) => {
        let n = 0;
        while (loading) await otherUsers.put(`load${w}_${n++ % 20}`, record(alice, "active")).catch(() => undefined);
      }),
    );

    // Raw gets queued at the frozen node, answered by whichever node believes
    // it leads: evidence for the report, not asserted (how many land before
    // the resumed node steps down varies from run to run, often none).
    const rawGets = { active: 0, revoked: 0 };
    const getInbox = createInbox();
    bus.conns[leader]!.subscribe(`${getInbox}.>`, {
      callback: (_e, m) => {
        const r = m.json<{ message?: { data: string } }>();
        if (r.message === undefined) return;
        const status = (JSON.parse(Buffer.from(r.message.data, "base64").toString()) as { status: string }).status;
        if (status === "active") rawGets.active++;
        else rawGets.revoked++;
      },
    });
    await bus.conns[leader]!.flush();

    let ackedAt = Number.POSITIVE_INFINITY;
    let watchedLoops: ReturnType<typeof checkLoops> | undefined;
    let readLoops: ReturnType<typeof checkLoops> | undefined;
    bus.cluster.servers[leader]!.kill("SIGSTOP");
    try {
      // Acknowledged once the other two have elected a leader (4–9 s of silence).
      await retryUntil(() => otherUsers.put(alice, record(alice, "revoked")), { timeoutMs: 30_000, intervalMs: 200 });
      ackedAt = performance.now();
      // Lookups in flight across the resume: each started after the ack.
      watchedLoops = checkLoops(lookupOf(watched, alice), 8, () => ackedAt);
      readLoops = checkLoops(lookupOf(leaderReads, alice), 8, () => ackedAt);
      for (let i = 0; i < 2_000; i++) {
        bus.conns[leader]!.publish("$JS.API.STREAM.MSG.GET.KV_users", JSON.stringify({ last_by_subj: `$KV.users.${alice}` }), { reply: `${getInbox}.${i}` });
      }
    } finally {
      bus.cluster.servers[leader]!.kill("SIGCONT");
    }
    try {
      // Until the resumed node's callout answers the revoke from its copy, many times over.
      await eventually(() => watchedLoops.verdicts.current, (n) => n >= 50, { timeoutMs: 30_000, intervalMs: 50, what: "the resumed node's directory answering the revoke" });
    } finally {
      loading = false;
      await Promise.all([watchedLoops?.stop(), readLoops?.stop(), load]);
      watched.stop();
    }
    console.info(
      `paused leader ${leaderName}: watched directory after the ack ${JSON.stringify(watchedLoops.verdicts)}; ` +
        `per-login leader reads ${JSON.stringify(readLoops.verdicts)}; raw gets queued at the paused node ${JSON.stringify(rawGets)}`,
    );
    expect(watchedLoops.verdicts.old, "lookups started after the revoke's ack that the watched directory answered active").toBe(0);
    expect(watchedLoops.verdicts.current).toBeGreaterThanOrEqual(50);
  }, 120_000);
});
