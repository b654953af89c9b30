import { afterEach, expect, it } from "vitest";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { DefaultAccountJetStreamLimits, calloutServerConfig } from "@unibus/kit";
import type { AccountJetStreamLimits } from "@unibus/kit";
import { ErrorCode, UnibusError } from "@unibus/contracts";
import { NkeyPrefix, SigningKey, encodeNkeySeed, nkeyAuthenticator, randomBytes } from "@unibus/crypto";
import { connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { createMembershipService } from "./service.js";
import type { RunningMembershipService } from "./service.js";

// The app account's JetStream limits, on a real server started from the
// config the callout package writes: the server must accept them, and they
// must bound what rooms can reserve.
const silent = pino({ level: "silent" });
const MiB = 1024 * 1024;

const running: { stop(): Promise<unknown> }[] = [];
afterEach(async () => {
  for (const r of running.splice(0).reverse()) await r.stop().catch(() => undefined);
});

async function bus(jetstreamLimits?: AccountJetStreamLimits): Promise<{ server: TestServer; nc: NatsConnection; svc: RunningMembershipService; admin: UnibusClient }> {
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const serviceKey = SigningKey.generate();
  const adminKey = SigningKey.generate();
  const bootKey = SigningKey.generate();
  const server = await startTestServer({
    config: calloutServerConfig({
      issuerAccountPublic: issuer.principal,
      calloutUserPublic: SigningKey.generate().principal,
      // Stand-ins for the service and a callout-authorized admin; the limits are under test, not permissions.
      serviceUsers: [serviceKey, adminKey, bootKey].map((k) => ({ service: "test", nkey: k.principal, permissions: { publish: { allow: [">"] }, subscribe: { allow: [">"] } } })),
      ...(jetstreamLimits === undefined ? {} : { jetstreamLimits }),
    }),
  });
  running.push(server);
  const nc = await server.connect({ authenticator: nkeyAuthenticator(serviceKey) });
  running.push({ stop: () => nc.close() });
  const svc = await createMembershipService(nc, {
    logger: silent,
    bootstrapPrincipal: bootKey.principal,
    quotas: { defaults: { maxBytes: MiB, maxMsgs: 1000, maxMsgSize: 64 * 1024, maxAgeSeconds: 3600 }, ceilings: { maxBytes: 4 * MiB, maxMsgs: 1000, maxMsgSize: 64 * 1024, maxAgeSeconds: 3600 } },
  });
  running.push(svc);
  const boot = await connect({ url: server.url, identity: bootKey });
  running.push({ stop: () => boot.close() });
  await boot.admin.bootstrap(adminKey.principal, "root");
  const admin = await connect({ url: server.url, identity: adminKey });
  running.push({ stop: () => admin.close() });
  return { server, nc, svc, admin };
}

it("a server started with the default account limits accepts them and enforces them on the UNIBUS account", async () => {
  const { nc } = await bus();
  const { limits } = await (await jetstreamManager(nc)).getAccountInfo();
  expect(limits).toMatchObject({
    max_memory: DefaultAccountJetStreamLimits.max_memory,
    max_storage: DefaultAccountJetStreamLimits.max_file,
    max_streams: DefaultAccountJetStreamLimits.max_streams,
    max_consumers: DefaultAccountJetStreamLimits.max_consumers,
  });
});

it("room quotas are reserved against the account's max_file: past it, rooms.create answers 503 storage_exhausted and writes nothing", async () => {
  const { nc, svc, admin } = await bus({ max_memory: 64 * MiB, max_file: 3 * MiB, max_streams: 64, max_consumers: 256 });
  const persisted = { persist: true, encrypt: true };
  await admin.rooms.create("one", persisted);
  await admin.rooms.create("two", persisted, { quota: { maxBytes: 2 * MiB } });
  const before = await svc.store.listRoomIds();
  const err = await admin.rooms.create("three", persisted).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UnibusError);
  expect(err).toMatchObject({ code: ErrorCode.Unavailable, reason: "storage_exhausted" });
  expect(await svc.store.listRoomIds()).toEqual(before);
  // Live-only rooms reserve nothing and keep working.
  await admin.rooms.create("live", { persist: false, encrypt: true });
  const streams: string[] = [];
  for await (const name of (await jetstreamManager(nc)).streams.names()) if (name.startsWith("ROOM_")) streams.push(name);
  expect(streams).toHaveLength(2);
});
