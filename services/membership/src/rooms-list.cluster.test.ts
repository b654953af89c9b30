import { describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { createInbox } from "@nats-io/transport-node";
import { pino } from "pino";
import type { MembershipRoomsListReply } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { membershipCopy } from "@unibus/kit";
import type { HandlerContext, SignedCaller } from "@unibus/kit";
import { checkLoops, createReplicatedKv, eventually, retryUntil } from "@unibus/testing";
import { connectedClusterForSuite } from "@unibus/testing/suite";
import type { MembershipDeps } from "./deps.js";
import { roomHandlers } from "./handlers/rooms.js";
import { roomSubject } from "./store/records.js";
import type { RoomRecord } from "./store/records.js";
import { MembershipStore } from "./store/membership-store.js";

const silent = pino({ level: "silent" });
const KEPT = "roomkept0001";
const GONE = "roomgone0001";
const ctx: HandlerContext = { subject: "unibus.v1.membership.rooms.list", logger: silent, now: Date.now, payload: new Uint8Array(0), body: new Uint8Array(0) };

function roomRecord(id: string, by: string): string {
  const room: RoomRecord = { id, name: id, subject: roomSubject(id), policy: { persist: false, encrypt: true }, createdBy: by, createdAt: new Date(0).toISOString() };
  return JSON.stringify(room);
}

function grantRecord(principal: string, rooms: string[]): string {
  return JSON.stringify({ principal, rooms: Object.fromEntries(rooms.map((r) => [r, "member"])) });
}

// The threat: a member removed from a room (the removal acknowledged by
// another replica) still sees the room, with its record, in its own
// rooms.list, answered by a rooms_by_member leader paused past an election
// and resumed. The list through the resumed node must never show it.
describe("rooms.list behind a rooms_by_member leader paused past an election, then resumed", () => {
  const bus = connectedClusterForSuite(3);

  it("never lists a room whose removal the new leader acknowledged, through the resumed node", async () => {
    const alice = SigningKey.generate().principal;
    const grants = await createReplicatedKv(bus.conns[0]!, "rooms_by_member", { allow_direct: false });
    const rooms = await createReplicatedKv(bus.conns[0]!, "rooms", { allow_direct: false });
    // A fresh R3 stream answers puts once its raft group has a leader ("no responders" until then).
    await retryUntil(() => rooms.put(KEPT, roomRecord(KEPT, alice)), { timeoutMs: 15_000, intervalMs: 100 });
    await retryUntil(() => rooms.put(GONE, roomRecord(GONE, alice)), { timeoutMs: 15_000, intervalMs: 100 });
    await retryUntil(() => grants.put(alice, grantRecord(alice, [KEPT, GONE])), { timeoutMs: 15_000, intervalMs: 100 });
    const leaderName = (await grants.status()).streamInfo.cluster?.leader;
    const leader = bus.cluster.nodeIndex(leaderName);
    expect(leader).toBeGreaterThanOrEqual(0);
    const other = (leader + 1) % 3;
    const otherGrants: KV = await new Kvm(bus.conns[other]!).open("rooms_by_member", { allow_direct: false });

    // A membership replica on the paused node, connected to that node only.
    const pkvm = new Kvm(bus.conns[leader]!);
    const pGrants = await pkvm.open("rooms_by_member", { allow_direct: false });
    const pRooms = await pkvm.open("rooms", { allow_direct: false });
    // The list reads only rooms_by_member (fenced) and rooms; the other two are never touched.
    const store = new MembershipStore({ users: pRooms, rooms: pRooms, members: pRooms, roomsByMember: pGrants }, bus.conns[leader]);
    membershipCopy(pGrants, silent);
    const spec = roomHandlers({ store } as unknown as MembershipDeps).list;
    const caller: SignedCaller = { anonymous: false, principal: alice, publicKey: new Uint8Array(32), role: "member" };
    const listCheck = async () => {
      const page = (await spec.handler({}, caller, ctx)) as MembershipRoomsListReply;
      return page.rooms.some((r) => r.room.id === GONE) ? ("old" as const) : ("current" as const);
    };
    // Beside it, the read this replaces: the grant record by leader get (evidence, not asserted).
    const getCheck = async () => (((await store.getRoomsByMember(alice))?.value.rooms[GONE] ?? null) === null ? ("current" as const) : ("old" as const));
    // Refused while the copy's first replay is behind its fence (a loaded machine): ask again.
    await eventually(() => listCheck().catch(() => null), (v) => v === "old", { timeoutMs: 10_000, what: "the room in alice's list" });

    // Writes through another node keep append-entry responses in flight at the freeze.
    let loading = true;
    const load = Promise.all(
      [0, 1, 2, 3].map(async (w) => {
        let n = 0;
        while (loading) await otherGrants.put(`load${w}_${n++ % 20}`, "x").catch(() => undefined);
      }),
    );

    // Raw gets queued at the frozen node, answered by whichever node believes
    // it leads: evidence that the stale window was open in this run, not
    // asserted (how many land before the resumed node steps down varies).
    const rawGets = { old: 0, current: 0 };
    const getInbox = createInbox();
    bus.conns[leader]!.subscribe(`${getInbox}.>`, {
      callback: (_e, m) => {
        const r = m.json<{ message?: { data?: string } }>();
        if (r.message === undefined) return;
        const data = r.message.data === undefined ? "" : Buffer.from(r.message.data, "base64").toString();
        if (data.includes(GONE)) rawGets.old++;
        else rawGets.current++;
      },
    });
    await bus.conns[leader]!.flush();

    let removedAt = Number.POSITIVE_INFINITY;
    let loops: ReturnType<typeof checkLoops>[] = [];
    bus.cluster.servers[leader]!.kill("SIGSTOP");
    try {
      // Acknowledged once the other two have elected a leader (4–9 s of silence).
      await retryUntil(() => otherGrants.put(alice, grantRecord(alice, [KEPT])), { timeoutMs: 30_000, intervalMs: 200 });
      removedAt = performance.now();
      // Lists in flight across the resume, each started after the ack.
      loops = [checkLoops(listCheck, 8, () => removedAt), checkLoops(getCheck, 8, () => removedAt)];
      for (let i = 0; i < 1_000; i++) {
        bus.conns[leader]!.publish("$JS.API.STREAM.MSG.GET.KV_rooms_by_member", JSON.stringify({ last_by_subj: `$KV.rooms_by_member.${alice}` }), { reply: `${getInbox}.${i}` });
      }
    } finally {
      bus.cluster.servers[leader]!.kill("SIGCONT");
    }
    const [lists, gets] = loops as [ReturnType<typeof checkLoops>, ReturnType<typeof checkLoops>];
    try {
      await eventually(() => lists.verdicts.current, (n) => n >= 50, { timeoutMs: 45_000, intervalMs: 50, what: "the resumed node's list without the room" });
    } finally {
      loading = false;
      await Promise.all([...loops.map((l) => l.stop()), load]);
    }
    console.info(
      `paused leader ${leaderName}: after the removal's ack, rooms.list ${JSON.stringify(lists.verdicts)}; ` +
        `the grant by leader get ${JSON.stringify(gets.verdicts)}; raw gets queued at the paused node ${JSON.stringify(rawGets)}; copy ${JSON.stringify(membershipCopy(pGrants).stats)}`,
    );
    expect(lists.verdicts.old, "lists started after the removal's ack that still showed the room").toBe(0);
    expect(lists.verdicts.current).toBeGreaterThanOrEqual(50);
    membershipCopy(pGrants).stop();
  }, 150_000);
});
