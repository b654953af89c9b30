import { afterAll, beforeAll, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import { createIdentity, randomBytes, toBase64Url } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { createMembershipService, noKicks } from "@unibus/membership";
import type { RunningMembershipService } from "@unibus/membership";
import { connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { createKeysService, epochKey } from "@unibus/keys";
import type { EpochRecord, RunningKeysService } from "@unibus/keys";
import { rejectionOf, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";

// What keys hands to members comes from its buckets; a damaged or forged
// record (a bug, a bad restore, a write with stolen rights) must be refused
// where it is read, as a coded 500, and the service must keep answering.
const silent = pino({ level: "silent" });
let server: TestServer;
let nc: NatsConnection;
let membership: RunningMembershipService;
let keys: RunningKeysService;
const [boot, admin, owner, alice] = Array.from({ length: 4 }, () => createIdentity());
const clients: UnibusClient[] = [];

async function client(id: Identity): Promise<UnibusClient> {
  const c = await connect({ url: server.url, identity: id });
  clients.push(c);
  return c;
}

/** A record of the right shape (its signature is not checked on read: members verify it). */
function epochRecord(roomId: string, principal: string): EpochRecord {
  return {
    roomId,
    epoch: 1,
    distributor: principal,
    signature: toBase64Url(randomBytes(64)),
    shares: [{ principal, sealedShare: toBase64Url(randomBytes(120)) }],
    createdAt: new Date().toISOString(),
    logSeq: 1,
    logHead: toBase64Url(randomBytes(32)),
  };
}

let ownerClient: UnibusClient;
let aliceClient: UnibusClient;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  membership = await createMembershipService(nc, { logger: silent, kicker: noKicks, bootstrapPrincipal: boot!.principal });
  keys = await createKeysService(nc, { logger: silent });
  const b = await client(boot!);
  await b.admin.bootstrap(admin!.principal, "root");
  const a = await client(admin!);
  await a.users.add(owner!.principal, "owner", "member");
  await a.users.add(alice!.principal, "alice", "member");
  ownerClient = await client(owner!);
  aliceClient = await client(alice!);
  await aliceClient.keys.registerAgreementKey(alice!);
});

afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await keys?.stop();
  await membership?.stop();
  await server?.stop();
});

it("an epoch record that fails its schema answers 500 corrupt_record; a well-formed one is served", async () => {
  const { room: damaged } = await ownerClient.rooms.create("damaged", { persist: false, encrypt: true });
  const { room: sound } = await ownerClient.rooms.create("sound", { persist: false, encrypt: true });
  await keys.buckets.roomKeys.put(epochKey(sound.id, 1), JSON.stringify(epochRecord(sound.id, owner!.principal)));
  // A share entry carrying a field no writer makes (a plaintext key, say).
  const forged = epochRecord(damaged.id, owner!.principal);
  await keys.buckets.roomKeys.put(epochKey(damaged.id, 1), JSON.stringify({ ...forged, shares: [{ ...forged.shares[0], roomKey: toBase64Url(randomBytes(32)) }] }));
  const err = await rejectionOf(ownerClient.keys.getShare(damaged.id, 1), UnibusError);
  expect([err.code, err.reason]).toEqual([ErrorCode.Internal, ErrorReason.CorruptRecord]);
  // Positive control: the same endpoint serves the well-formed record.
  expect((await ownerClient.keys.getShare(sound.id, 1)).epoch).toBe(1);
});

it("an agreement key record that fails its schema answers 500 corrupt_record, not a key to seal to", async () => {
  const { room } = await ownerClient.rooms.create("keys", { persist: false, encrypt: true });
  await ownerClient.rooms.invite(room.id, alice!.principal);
  // Positive control: alice's registered key is listed.
  const before = await ownerClient.keys.agreementKeys(room.id);
  expect(before.members.find((m) => m.principal === alice!.principal)?.agreementKey).toBeDefined();
  await keys.buckets.agreementKeys.put(alice!.principal, JSON.stringify({ principal: alice!.principal, agreementKey: "not-a-key" }));
  const err = await rejectionOf(ownerClient.keys.agreementKeys(room.id), UnibusError);
  expect([err.code, err.reason]).toEqual([ErrorCode.Internal, ErrorReason.CorruptRecord]);
});
