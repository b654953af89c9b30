import { afterAll, beforeAll, expect, it } from "vitest";
import { jetstream } from "@nats-io/jetstream";
import { createInbox, headers } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { calloutServerConfig } from "@unibus/kit";
import { serviceUserPermissions } from "@unibus/cli";
import { StoredConsumer, Subjects, decodeReply, roomMembershipSubject } from "@unibus/contracts";
import { NkeyPrefix, SigningKey, createIdentity, encodeNkeySeed, envelopeToHeaders, nkeyAuthenticator, randomBytes, signEnvelope, toBase64Url } from "@unibus/crypto";
import { MembershipBucket, createMembershipService } from "@unibus/membership";
import type { RunningMembershipService } from "@unibus/membership";
import { eventually, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { createKeysService, epochKey } from "@unibus/keys";
import type { EpochRecord, RunningKeysService } from "@unibus/keys";

// The services run under the exact server permissions `unibus up` writes:
// keys reads membership's buckets but may not write them; membership may
// announce changes on the rooms' membership subjects.
const silent = pino({ level: "silent" });
const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
const calloutUser = SigningKey.generate();
const membershipUser = SigningKey.generate();
const keysUser = SigningKey.generate();
const probeUser = SigningKey.generate();
const blobsUser = SigningKey.generate();
const bootKey = SigningKey.generate();
const admin = createIdentity();

let server: TestServer;
let membership: RunningMembershipService;
let keys: RunningKeysService;
let probe: NatsConnection;
let keysNc: NatsConnection;

async function signedRequest<T>(subject: string, body: unknown, key: SigningKey): Promise<T> {
  const data = new TextEncoder().encode(JSON.stringify(body));
  const h = headers();
  for (const [k, v] of Object.entries(envelopeToHeaders(signEnvelope(key, subject, data)))) h.set(k, v);
  // The kit answers only the signer's own inbox.
  return decodeReply<T>(await probe.request(subject, data, { headers: h, timeout: 5_000, noMux: true, reply: createInbox(`_INBOX.${key.principal}`) }));
}

beforeAll(async () => {
  server = await startTestServer({
    config: calloutServerConfig({
      issuerAccountPublic: issuer.principal,
      calloutUserPublic: calloutUser.principal,
      serviceUsers: [
        { service: "membership", nkey: membershipUser.principal, permissions: serviceUserPermissions("membership") },
        { service: "keys", nkey: keysUser.principal, permissions: serviceUserPermissions("keys") },
        // Only its grant: it reads members (a watch grant on KV_members) and must not reach keys' consumer.
        { service: "blobs", nkey: blobsUser.principal, permissions: serviceUserPermissions("blobs") },
        // A stand-in for callout-authorized clients: requests and room subjects, nothing else.
        { service: "probe", nkey: probeUser.principal, permissions: { publish: { allow: ["unibus.v1.>"] }, subscribe: { allow: ["_INBOX.>", "unibus.room.>"] } } },
      ],
    }),
  });
  const membershipNc = await server.connect({ authenticator: nkeyAuthenticator(membershipUser) });
  membership = await createMembershipService(membershipNc, { logger: silent, bootstrapPrincipal: bootKey.principal });
  keysNc = await server.connect({ authenticator: nkeyAuthenticator(keysUser) });
  keys = await createKeysService(keysNc, { logger: silent });
  probe = await server.connect({ authenticator: nkeyAuthenticator(probeUser) });
  await signedRequest(Subjects.membership.adminBootstrap, { principal: admin.principal, handle: "root" }, bootKey);
});

afterAll(async () => {
  await keys?.stop();
  await membership?.stop();
  await probe?.close();
  await server?.stop();
});

it("under its server permissions the keys service reads room membership, and membership announces changes", async () => {
  const { room } = await signedRequest<{ room: { id: string } }>(Subjects.membership.roomsCreate, { name: "perm", policy: { persist: false, encrypt: true } }, admin.signingKey);
  const member = createIdentity();
  await signedRequest(Subjects.membership.usersAdd, { principal: member.principal, handle: "m", role: "member" }, admin.signingKey);
  const sub = probe.subscribe(roomMembershipSubject(room.id), { max: 1 });
  await probe.flush();
  await signedRequest(Subjects.membership.roomsInvite, { roomId: room.id, principal: member.principal }, admin.signingKey);
  for await (const m of sub) expect(m.json()).toMatchObject({ roomId: room.id, principal: member.principal, change: "added" });
  const reply = await signedRequest<{ members: { principal: string }[] }>(Subjects.keys.agreementKeysList, { roomId: room.id }, admin.signingKey);
  expect(reply.members.map((m) => m.principal).sort()).toEqual([admin.principal, member.principal].sort());
});

it("the keys service's connection cannot write the membership buckets", async () => {
  const errors: string[] = [];
  void (async () => {
    for await (const s of keysNc.status()) if (s.type === "error") errors.push(s.error.name);
  })();
  keysNc.publish(`$KV.${MembershipBucket.members}.aaaaaaaaaaaa.${keysUser.principal}`, "{}");
  await keysNc.flush();
  // The server reports the violation asynchronously: wait for that event (bounded).
  await eventually(() => errors, (e) => e.includes("PermissionViolationError"), { what: "a permission violation for the members bucket" });
});

it("under its server permissions the keys service consumes removals: the removed member's share is deleted and the removal acknowledged", async () => {
  const { room } = await signedRequest<{ room: { id: string } }>(Subjects.membership.roomsCreate, { name: "perm-leave", policy: { persist: false, encrypt: true } }, admin.signingKey);
  const member = createIdentity();
  await signedRequest(Subjects.membership.usersAdd, { principal: member.principal, handle: "leaver", role: "member" }, admin.signingKey);
  await signedRequest(Subjects.membership.roomsInvite, { roomId: room.id, principal: member.principal }, admin.signingKey);
  const shares = [admin.principal, member.principal].sort().map((principal) => ({ principal, sealedShare: toBase64Url(randomBytes(120)) }));
  const record: EpochRecord = { roomId: room.id, epoch: 1, distributor: admin.principal, signature: toBase64Url(randomBytes(64)), shares, createdAt: new Date().toISOString(), logSeq: 1, logHead: toBase64Url(randomBytes(32)) };
  await keys.buckets.roomKeys.put(epochKey(room.id, 1), JSON.stringify(record));
  await signedRequest(Subjects.membership.roomsRemove, { roomId: room.id, principal: member.principal }, admin.signingKey);
  const share = () => keys.buckets.roomKeys.get(epochKey(room.id, 1)).then((e) => e!.json<EpochRecord>().shares.find((s) => s.principal === member.principal));
  expect((await eventually(share, (s) => s?.sealedShare === undefined, { timeoutMs: 15_000, intervalMs: 50, what: "the leaver's share deleted" }))?.shareDigest).toBeDefined();
  // Acknowledged through the service's own grant: nothing left pending or waiting for redelivery.
  const jsm = await jetstream(keysNc).jetstreamManager();
  const { stream, durable } = StoredConsumer.keys.shareDeletion;
  const last = (await jsm.streams.info(stream)).state.last_seq;
  await eventually(() => jsm.consumers.info(stream, durable), (ci) => ci.ack_floor.stream_seq >= last && ci.num_ack_pending === 0, { timeoutMs: 15_000, intervalMs: 50, what: "the removal acknowledged" });
});

it("no other service's grant reaches keys' removals consumer: blobs (a members reader) and membership (room consumer clean-up) are refused", async () => {
  const { stream, durable } = StoredConsumer.keys.shareDeletion;
  const jsm = await jetstream(keysNc).jetstreamManager();
  await jsm.consumers.info(stream, durable);
  for (const user of [blobsUser, membershipUser]) {
    const nc = await server.connect({ authenticator: nkeyAuthenticator(user) });
    try {
      const errors: string[] = [];
      void (async () => {
        for await (const s of nc.status()) if (s.type === "error") errors.push(`${s.error.name}: ${s.error.message}`);
      })();
      // Delete, pull and re-create with another config: each refused by the server, none reaching JetStream.
      for (const subject of [`$JS.API.CONSUMER.DELETE.${stream}.${durable}`, `$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`, `$JS.API.CONSUMER.CREATE.${stream}.${durable}`]) {
        nc.publish(subject, subject.includes("CREATE") ? JSON.stringify({ stream_name: stream, config: { durable_name: durable, ack_policy: "none" } }) : "{}", { reply: createInbox() });
        await nc.flush();
        await eventually(() => errors, (e) => e.some((m) => m.includes("PermissionViolation") && m.includes(subject)), { what: `a permission violation for ${subject}` });
      }
    } finally {
      await nc.close();
    }
  }
  // Still there, with keys' own config.
  expect((await jsm.consumers.info(stream, durable)).config.ack_policy).toBe("explicit");
});
