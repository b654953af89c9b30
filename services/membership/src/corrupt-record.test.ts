import { afterAll, beforeAll, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { ErrorCode, ErrorReason, StoredBucket, UnibusError } from "@unibus/contracts";
import { SigningKey } from "@unibus/crypto";
import { connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { rejectionOf, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { noKicks } from "./kick.js";
import { createMembershipService } from "./service.js";
import type { RunningMembershipService } from "./service.js";

// A damaged record in the store (a bug, a bad restore, a forged write) must
// be refused where it is read: a coded 500, the service still answering,
// and nothing granted on the strength of it.
let server: TestServer;
let nc: NatsConnection;
let svc: RunningMembershipService;
let admin: UnibusClient;
const bootKey = SigningKey.generate();
const adminKey = SigningKey.generate();
const victim = SigningKey.generate();

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  svc = await createMembershipService(nc, { logger: pino({ level: "silent" }), kicker: noKicks, bootstrapPrincipal: bootKey.principal });
  const boot = await connect({ url: server.url, identity: bootKey });
  await boot.admin.bootstrap(adminKey.principal, "root");
  await boot.close();
  admin = await connect({ url: server.url, identity: adminKey });
});

afterAll(async () => {
  await admin?.close();
  await svc?.stop();
  await server?.stop();
});

it("a users record that fails its schema answers 500 corrupt_record, and the service keeps answering", async () => {
  const users = await new Kvm(nc).open(StoredBucket.membership.users);
  await users.put(victim.principal, JSON.stringify({ principal: victim.principal, role: "admin", status: "active" }));
  const err = await rejectionOf(admin.users.get(victim.principal), UnibusError);
  expect([err.code, err.reason]).toEqual([ErrorCode.Internal, ErrorReason.CorruptRecord]);
  expect(err.message).not.toContain(victim.principal);
  // Positive control: a sound record is served by the same endpoint.
  expect((await admin.users.get(adminKey.principal)).user.role).toBe("admin");
});

it("a signer whose users record is not JSON is denied, not resolved to a role", async () => {
  const users = await new Kvm(nc).open(StoredBucket.membership.users);
  const mallory = SigningKey.generate();
  await users.put(mallory.principal, "{\"role\":\"admin\"");
  const client = await connect({ url: server.url, identity: mallory });
  try {
    const err = await rejectionOf(client.users.add(SigningKey.generate().principal, "eve", "admin"), UnibusError);
    expect(err.code).toBe(ErrorCode.Internal);
    expect(err.reason).toBe(ErrorReason.CorruptRecord);
  } finally {
    await client.close();
  }
});

it("a rooms record that fails its schema answers 500 corrupt_record; a sound room is still served", async () => {
  const { room: damaged } = await admin.rooms.create("damaged", { persist: false, encrypt: true });
  const { room: sound } = await admin.rooms.create("sound", { persist: false, encrypt: true });
  const rooms = await new Kvm(nc).open(StoredBucket.membership.rooms);
  // A forged policy field the schema does not know, and required fields missing.
  await rooms.put(damaged.id, JSON.stringify({ id: damaged.id, name: "damaged", policy: { persist: false, encrypt: false, open: true } }));
  const err = await rejectionOf(admin.rooms.get(damaged.id), UnibusError);
  expect([err.code, err.reason]).toEqual([ErrorCode.Internal, ErrorReason.CorruptRecord]);
  // Positive control: the same endpoint serves a sound record.
  expect((await admin.rooms.get(sound.id)).room.name).toBe("sound");
});

it("a listing that meets a damaged record answers 500 corrupt_record instead of passing it on; a page before it is served", async () => {
  const users = await new Kvm(nc).open(StoredBucket.membership.users);
  const forged = SigningKey.generate();
  // Appended last in the stream: role widened to a value the schema does not allow, fields missing.
  await users.put(forged.principal, JSON.stringify({ principal: forged.principal, role: "root", status: "active" }));
  const err = await rejectionOf(admin.users.list(), UnibusError);
  expect([err.code, err.reason]).toEqual([ErrorCode.Internal, ErrorReason.CorruptRecord]);
  expect(err.message).not.toContain(forged.principal);
  // Positive control: a page that ends before the damaged records lists sound ones (the admin is first).
  const first = await admin.users.list({ limit: 1 });
  expect(first.users.map((u) => u.principal)).toEqual([adminKey.principal]);
});
