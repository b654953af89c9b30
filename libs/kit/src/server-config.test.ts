import { describe, expect, it } from "vitest";
import { CalloutLease, ServiceStorage, StoredBucket, StoredConsumer, StoredObjectStore, kvStreamName } from "@unibus/contracts";
import { calloutUserPermissions, serviceStoragePermissions } from "./server-config.js";

describe("service permissions generated from storage declarations", () => {
  it("every bucket and object store is owned by exactly one service (nonces: each with mutating endpoints)", () => {
    const owners = new Map<string, string[]>();
    for (const [service, decl] of Object.entries(ServiceStorage)) {
      for (const b of [...decl.ownsKv, ...("ownsObjectStores" in decl ? decl.ownsObjectStores : [])]) owners.set(b, [...(owners.get(b) ?? []), service]);
    }
    // The callout's lease bucket is owned by the callout's own connection (calloutUserPermissions), no service.
    const { shared, authCallout, ...owned } = StoredBucket;
    for (const bucket of [...Object.values(owned).flatMap((g) => Object.values(g)), ...Object.values(StoredObjectStore)]) {
      expect(owners.get(bucket), bucket).toHaveLength(1);
    }
    expect(owners.get(shared.nonces)).toEqual(["membership", "keys", "blobs", "replica-gateway"]);
    expect(owners.get(authCallout.leases)).toBeUndefined();
  });

  it("the lease registry: the callout owns it and answers barriers; membership reads it and asks, never writes; no client grant reaches a barrier", () => {
    const callout = calloutUserPermissions("UCALLOUT");
    expect(callout.publish.allow).toContain("$KV.callout_leases.>");
    expect(callout.publish.allow).toContain("$JS.API.STREAM.*.KV_callout_leases");
    // Still no write to a directory bucket.
    expect(callout.publish.allow.filter((s) => s.startsWith("$KV.users") || s.startsWith("$KV.rooms_by_member"))).toEqual([]);
    expect(callout.subscribe.allow).toContain(`${CalloutLease.barrierPrefix}.*`);
    const membership = serviceStoragePermissions(ServiceStorage.membership).publish.allow;
    expect(membership).toContain("$JS.API.STREAM.INFO.KV_callout_leases");
    expect(membership).toContain(`${CalloutLease.barrierPrefix}.*`);
    expect(membership.filter((s) => s.startsWith("$KV.callout_leases"))).toEqual([]);
    // Clients publish control-plane requests (`unibus.v1.*.>`) and their rooms (`unibus.room.<id>.>`) only.
    expect(CalloutLease.barrierPrefix.startsWith("unibus.v1.")).toBe(false);
    expect(CalloutLease.barrierPrefix.startsWith("unibus.room.")).toBe(false);
    for (const other of ["keys", "blobs", "replica-gateway", "healthz"] as const) {
      expect(serviceStoragePermissions(ServiceStorage[other]).publish.allow.filter((s) => s.startsWith("unibus.lease"))).toEqual([]);
    }
  });

  it("an owner may write its buckets; a reader gets leader reads and listings only, never a write or a direct get", () => {
    const keys = serviceStoragePermissions(ServiceStorage.keys).publish.allow;
    expect(keys).toContain("$KV.room_keys.>");
    expect(keys).toContain("$JS.API.STREAM.MSG.GET.KV_members");
    expect(keys.filter((s) => s.startsWith("$KV.members") || s.startsWith("$KV.users"))).toEqual([]);
    expect(keys.filter((s) => s.includes("DIRECT.GET"))).toEqual([]);
    const blobs = serviceStoragePermissions(ServiceStorage.blobs).publish.allow;
    expect(blobs).toContain("$O.blobs.>");
    // Blobs: stream info, leader gets and the watch of members' fenced copy, never a write there.
    expect(blobs.filter((s) => s.includes("KV_members"))).toEqual([
      "$JS.API.STREAM.INFO.KV_members",
      "$JS.API.STREAM.MSG.GET.KV_members",
      "$JS.API.CONSUMER.*.KV_members",
      "$JS.API.CONSUMER.*.KV_members.>",
      "$JS.FC.KV_members.>",
    ]);
    expect(blobs.filter((s) => s.startsWith("$KV.members") || s.includes("DIRECT.GET.KV_"))).toEqual([]);
    expect(blobs.filter((s) => s.startsWith("$JS.ACK."))).toEqual([]);
    // The gateway: its lifecycle buckets, reads and a watch of users (admin roles), never a write there.
    const gateway = serviceStoragePermissions(ServiceStorage["replica-gateway"]).publish.allow;
    expect(gateway).toEqual(expect.arrayContaining(["$KV.replica_history.>", "$KV.replica_cuks.>", "$KV.nonces.>", "$JS.API.STREAM.MSG.GET.KV_users", "$JS.API.CONSUMER.*.KV_users", "unibus.v1.replica.seed.request"]));
    expect(gateway.filter((s) => s.startsWith("$KV.users") || s.includes("DIRECT.GET"))).toEqual([]);
  });

  it("keys may create, pull from and acknowledge its own durable consumer of members, by name, and no other's acks", () => {
    const { stream, durable } = StoredConsumer.keys.shareDeletion;
    expect(stream).toBe(kvStreamName(StoredBucket.membership.members));
    const keys = serviceStoragePermissions(ServiceStorage.keys).publish.allow;
    expect(keys).toEqual(
      expect.arrayContaining([
        `$JS.API.CONSUMER.CREATE.${stream}.${durable}`,
        `$JS.API.CONSUMER.INFO.${stream}.${durable}`,
        `$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`,
        `$JS.ACK.${stream}.${durable}.>`,
      ]),
    );
    expect(keys.filter((s) => s.startsWith("$JS.ACK."))).toEqual([`$JS.ACK.${stream}.${durable}.>`]);
    for (const [service, decl] of Object.entries(ServiceStorage)) {
      if (service !== "keys") expect(serviceStoragePermissions(decl).publish.allow.filter((s) => s.startsWith("$JS.ACK.")), service).toEqual([]);
    }
  });

  it("every other service is denied keys' durable consumer, even where a watch or clean-up grant would reach it", () => {
    const { stream, durable } = StoredConsumer.keys.shareDeletion;
    const denied = [`$JS.API.CONSUMER.*.${stream}.${durable}`, `$JS.API.CONSUMER.*.${stream}.${durable}.>`, `$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`, `$JS.ACK.${stream}.${durable}.>`];
    expect(serviceStoragePermissions(ServiceStorage.keys).publish.deny).toBeUndefined();
    for (const [service, decl] of Object.entries(ServiceStorage)) {
      if (service !== "keys") expect(serviceStoragePermissions(decl).publish.deny, service).toEqual(denied);
    }
  });

  it("a service that stores nothing gets no JetStream API beyond what it declares", () => {
    const healthz = serviceStoragePermissions(ServiceStorage.healthz);
    expect(healthz.publish.allow.filter((s) => s.startsWith("$KV.") || s.startsWith("$O.") || /\$JS\.API\.STREAM\.(CREATE|UPDATE|DELETE|PURGE)/.test(s))).toEqual([]);
    // Its only consumers watch `users` (the admin check's fenced copy).
    expect(healthz.publish.allow.filter((s) => s.includes("CONSUMER") && !s.includes("KV_users"))).toEqual([]);
    expect(healthz.subscribe.allow).toContain("unibus.v1.healthz.>");
    const bare = serviceStoragePermissions({ endpoints: "x", ownsKv: [] });
    expect(bare.publish.allow.filter((s) => s.startsWith("$JS"))).toEqual([]);
  });
});
