/**
 * Access checks per second through the kit's membership view on a real
 * 3-node cluster (R3 `members`, the client on a follower's node): the
 * fenced watched copy (`roomRole`) against the view it replaced (a leader
 * get beside a leader-contact fence reused for 250 ms), in alternating
 * slices so both see the same load on a shared machine. One check at a
 * time and 32 in flight.
 *
 *   npx tsx bench/src/view-checks.ts [--slice-ms 1000] [--slices 3]
 */
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { memberKey } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { LeaderContactFence, readRecord, roomRole, storeUnavailable } from "@unibus/kit";
import { retryUntil, startTestCluster } from "@unibus/testing";

const ROOM = "room0000000001";
const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const sliceMs = arg("slice-ms", 1_000);
const slices = arg("slices", 3);

/** The view before the fenced copy, as it was: a leader get beside a fence reused for 250 ms. */
function besideFence(members: KV): (principal: string) => Promise<unknown> {
  const fence = new LeaderContactFence(members);
  return async (principal) => {
    const [record] = await Promise.all([
      readRecord(members, memberKey(ROOM, principal), { store: "membership" }),
      fence.check().catch((err: unknown) => {
        throw storeUnavailable("membership", err);
      }),
    ]);
    return record;
  };
}

async function slice(check: (p: string) => Promise<unknown>, principals: string[], inFlight: number): Promise<number> {
  const end = performance.now() + sliceMs;
  let done = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async (_, lane) => {
      let i = lane;
      while (performance.now() < end) {
        await check(principals[i++ % principals.length]!);
        done++;
      }
    }),
  );
  return done / (sliceMs / 1_000);
}

const cluster = await startTestCluster(3);
try {
  await cluster.waitForMetaLeader();
  const writer = await cluster.servers[0]!.connect();
  const members = await new Kvm(writer).create("members", { replicas: 3, allow_direct: false });
  const principals = Array.from({ length: 200 }, () => SigningKey.generate().principal);
  await retryUntil(() => members.put("warmup", "{}"), { timeoutMs: 15_000, intervalMs: 100 });
  for (const p of principals) await members.put(memberKey(ROOM, p), JSON.stringify({ roomId: ROOM, principal: p, role: "member", addedAt: new Date(0).toISOString(), addedBy: p }));
  const leaderName = (await members.status()).streamInfo.cluster?.leader;
  const follower = cluster.servers.findIndex((_, i) => `${cluster.name}-n${i + 1}` !== leaderName);
  const nc = await cluster.servers[follower]!.connect();
  const kv = await new Kvm(nc).open("members", { allow_direct: false });
  const copy = (p: string) => roomRole(kv, ROOM, p);
  const beside = besideFence(kv);
  await retryUntil(() => copy(principals[0]!), { timeoutMs: 15_000, intervalMs: 100 });
  for (const inFlight of [1, 32]) {
    const rates = { copy: [] as number[], beside: [] as number[] };
    for (let s = 0; s < slices; s++) {
      rates.beside.push(await slice(beside, principals, inFlight));
      rates.copy.push(await slice(copy, principals, inFlight));
    }
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    console.info(
      `${inFlight} in flight: fenced copy ${Math.round(sum(rates.copy) / slices)}/s, get beside fence ${Math.round(sum(rates.beside) / slices)}/s, ratio ${(sum(rates.copy) / sum(rates.beside)).toFixed(2)} ` +
        `(slices: copy ${rates.copy.map(Math.round).join(", ")}; beside ${rates.beside.map(Math.round).join(", ")})`,
    );
  }
  await nc.close();
  await writer.close();
} finally {
  await cluster.stop();
}
