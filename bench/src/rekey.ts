/**
 * P4: rekey of a 1,000-member room. One owner's `rekeyRoom`: fetch and
 * verify the room's membership log (all 1,000+ entries cold, only what is
 * new when warm), read the epochs and the members' agreement keys, a fresh room key sealed to 1,000
 * members, one signature, and `epochs.publish` (the service checks the set
 * against the membership, verifies the signature, stores ONE record) — until
 * the durable reply. Measured cold (the owner verifies the 1,000 log
 * entries and 1,000 agreement-key bindings first, as a fresh client does),
 * warm (bindings already verified, log up to date), and after a removal
 * with the next epoch prepared in advance (`prepareNextEpoch`, which
 * `autoRekey` keeps ready: sealing is most of the work, and it can be done
 * before the change; the prepared key never leaves the owner's process
 * until it is published).
 *
 * raw, same run: 1,000 sequential `kv.put`s of a share-sized value into a
 * scratch bucket — what storing one record per share would cost. Goal:
 * rekey ≤ raw, i.e. ratio (raw ÷ unibus) ≥ 1.0.
 *
 *   npx tsx bench/src/rekey.ts [--members 1000] [--samples 5]
 */
import { fileURLToPath } from "node:url";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { pino } from "pino";
import { createIdentity, randomBytes, signEnvelope, toBase64Url } from "@unibus/crypto";
import type { SigningKey } from "@unibus/crypto";
import { createKeysService } from "@unibus/keys";
import { MembershipBucket, createMembershipService, memberKey } from "@unibus/membership";
import { RoomLogOp, RoomLogOpSubject, ZERO_HASH, agreementKeyStatementBytes, connect, deriveRoomId, prepareNextEpoch, rekeyRoom, roomLogEntry, roomLogEntryHash } from "@unibus/sdk";
import type { RoomLogRole } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import { numberArg, percentile, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

const silent = pino({ level: "silent" });

/** Options of {@link runRekey}. */
export interface RekeyOptions {
  /** Room size. Default 1,000. */
  members?: number;
  /** Warm rekeys to time (median reported). Default 5. */
  samples?: number;
}

/** P4: cold and warm rekey of a large room against 1,000 sequential raw KV puts, same server. */
export async function runRekey(opts: RekeyOptions = {}): Promise<BenchCase[]> {
  const n = opts.members ?? 1_000;
  const samples = opts.samples ?? 5;
  const server = await startTestServer({ jetstream: true });
  const nc = await server.connect();
  const membership = await createMembershipService(nc, { logger: silent });
  const keys = await createKeysService(nc, { logger: silent });
  const owner = createIdentity();
  const client = await connect({ url: server.url, identity: owner, requestTimeoutMs: 30_000 });
  try {
    // Set-up writes the data model directly: 1,000 signed users.add/invite
    // round trips would only slow the bench, not change what it measures.
    const kvm = new Kvm(jetstream(nc));
    const users = await kvm.open(MembershipBucket.users);
    const members = await kvm.open(MembershipBucket.members);
    const roomLog = await kvm.open(MembershipBucket.roomLog);
    const at = new Date().toISOString();
    const people = [owner, ...Array.from({ length: n - 1 }, () => createIdentity())];
    // The room's membership log, signed by the owner as the service would
    // store it: the owner's first rekey fetches and verifies all of it (cold).
    // Chained here without verifying: a verification would put every
    // entry's signature into this process's verified-once cache, and the
    // owner's cold rekey (same process) would then find them done instead
    // of verifying them as a fresh client does.
    const enc = new TextEncoder();
    let roomId = "";
    const chain = { length: 0, headHash: ZERO_HASH };
    const appendLog = async (actor: SigningKey, op: RoomLogOp, body: object, target: string, role?: RoomLogRole): Promise<void> => {
      const bytes = enc.encode(JSON.stringify(body));
      const envelope = signEnvelope(actor, RoomLogOpSubject[op], bytes);
      if (op === RoomLogOp.create) roomId = deriveRoomId(envelope.signature);
      const entry = roomLogEntry({ after: chain, roomId, op, body: bytes, envelope, target, ...(role === undefined ? {} : { role }), at });
      chain.length += 1;
      chain.headHash = roomLogEntryHash(entry);
      await roomLog.create(`${roomId}.${entry.seq}`, JSON.stringify(entry));
    };
    await appendLog(owner.signingKey, RoomLogOp.create, { name: "p4", policy: { persist: false, encrypt: true } }, owner.principal, "owner");
    for (const id of people.slice(1)) await appendLog(owner.signingKey, RoomLogOp.invite, { roomId, principal: id.principal }, id.principal, "member");
    await Promise.all(
      people.map(async (id, i) => {
        const role = i === 0 ? "owner" : "member";
        await users.put(id.principal, JSON.stringify({ principal: id.principal, handle: `m${i}`, role: "member", status: "active", addedAt: at, addedBy: owner.principal }));
        await members.put(memberKey(roomId, id.principal), JSON.stringify({ roomId, principal: id.principal, role, addedAt: at, addedBy: owner.principal }));
        const signature = toBase64Url(id.signingKey.sign(agreementKeyStatementBytes(id.principal, id.agreementPublicKey)));
        await keys.buckets.agreementKeys.put(id.principal, JSON.stringify({ principal: id.principal, agreementKey: toBase64Url(id.agreementPublicKey), signature }));
      }),
    );

    const timeRekey = async (): Promise<number> => {
      const t0 = performance.now();
      const r = await rekeyRoom(client, owner.signingKey, roomId);
      const ms = performance.now() - t0;
      if (!r.published || r.withoutShare.length > 0) throw new Error("bench rekey did not publish a full share set");
      return ms;
    };
    const timeRaw = async (): Promise<number> => {
      const scratch = await kvm.create(`bench_p4_${randomBytes(4).reduce((s, b) => s + b.toString(16).padStart(2, "0"), "")}`);
      const value = randomBytes(200);
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await scratch.put(`k${i}`, value);
      const ms = performance.now() - t0;
      await scratch.destroy();
      return ms;
    };

    // The cold rekey's timeline: when each reply and each page of the log
    // arrive (a page is named by its first entry), when the log is verified,
    // when the publish leaves (sealing, Merkle root and signature done) and
    // when it is durable; and this process's CPU time meanwhile (all
    // threads: the client, its crypto pool and the in-process services),
    // which swings less than wall time on a shared machine. Timed on this
    // client's own calls, so nothing else runs.
    const marks: string[] = [];
    const t0 = { at: 0 };
    const mark = <T>(name: string, p: Promise<T>): Promise<T> =>
      p.then((v) => {
        marks.push(`${name} ${(performance.now() - t0.at).toFixed(0)}`);
        return v;
      });
    const { keys: api, roomLogs } = client;
    const real = { agreementKeys: api.agreementKeys.bind(api), epochs: api.epochs.bind(api), publishEpoch: api.publishEpoch.bind(api), sync: roomLogs.sync.bind(roomLogs) };
    api.agreementKeys = (roomId) => mark("agreement keys", real.agreementKeys(roomId));
    api.epochs = (roomId) => mark("epochs", real.epochs(roomId));
    roomLogs.sync = (roomId, atLeast) => mark("log verified", real.sync(roomId, atLeast));
    const realLogPage = client.rooms.log.bind(client.rooms);
    client.rooms.log = (roomId, fromSeq, limit) => mark(`log page ${fromSeq}`, realLogPage(roomId, fromSeq, limit));
    api.publishEpoch = (req) => {
      marks.push(`publish sent ${(performance.now() - t0.at).toFixed(0)} (${(JSON.stringify(req).length / 1024).toFixed(0)} KiB)`);
      return mark("durable", real.publishEpoch(req));
    };
    t0.at = performance.now();
    const cpu0 = process.cpuUsage();
    const cold = await timeRekey();
    const cpu = process.cpuUsage(cpu0);
    Object.assign(api, { agreementKeys: real.agreementKeys, epochs: real.epochs, publishEpoch: real.publishEpoch });
    roomLogs.sync = real.sync;
    client.rooms.log = realLogPage;
    console.log(`P4 cold timeline (ms from the start; ${n} bindings and ${n} log entries verified cold, as a fresh client does): ${marks.join(", ")}; CPU ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms`);
    const rawCold = await timeRaw();
    const warm: number[] = [];
    const raw: number[] = [];
    // Interleaved, so drift on the shared machine hits both columns alike.
    for (let i = 0; i < samples; i++) {
      warm.push(await timeRekey());
      raw.push(await timeRaw());
    }
    // A removal with the next epoch prepared in advance (what autoRekey
    // keeps ready): the owner only re-reads, signs and publishes.
    const prepared: number[] = [];
    const rawPrepared: number[] = [];
    for (let i = 0; i < samples; i++) {
      await prepareNextEpoch(client, roomId);
      const removed = people[people.length - 1 - i]!.principal;
      await appendLog(owner.signingKey, RoomLogOp.remove, { roomId, principal: removed }, removed);
      await members.delete(memberKey(roomId, removed));
      prepared.push(await timeRekey());
      rawPrepared.push(await timeRaw());
    }
    const goal = "≥ 1.00 (rekey ≤ 1,000 sequential puts)";
    return [
      { name: `P4 rekey ${n} members, cold (1 sample)`, unit: "ms", unibus: cold, raw: rawCold, lowerIsBetter: true, goal },
      { name: `P4 rekey ${n} members, warm (p50 of ${samples})`, unit: "ms", unibus: percentile(warm, 50), raw: percentile(raw, 50), lowerIsBetter: true, goal },
      { name: `P4 removal rekey, prepared (p50 of ${samples})`, unit: "ms", unibus: percentile(prepared, 50), raw: percentile(rawPrepared, 50), lowerIsBetter: true, goal },
    ];
  } finally {
    await client.close();
    await keys.stop();
    await membership.stop();
    await nc.close();
    await server.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const c of await runRekey({ members: numberArg("--members", 1_000), samples: numberArg("--samples", 5) })) printCase(c);
}
