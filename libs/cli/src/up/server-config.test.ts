import { DefaultAccountJetStreamLimits, accountJetStreamLimitsFromEnv } from "@unibus/kit";
import { Subjects } from "@unibus/contracts";
import { renderNatsConfig } from "@unibus/natsd";
import { describe, expect, it } from "vitest";
import { buildServerConfig, calloutAuthorization, jetStreamSyncInterval } from "./server-config.js";
import type { BusPrincipals } from "./server-config.js";
import { ALL_SERVICES } from "./services.js";

const base = { host: "127.0.0.1", port: 4222, monitorPort: 8222, jetstreamDir: "/state/data" };
const principals: BusPrincipals = {
  calloutIssuerPublic: "AISSUER",
  calloutXkeyPublic: "XCURVE",
  services: new Map(ALL_SERVICES.map((s) => [s, `U_${s}`])),
  systemPublic: "USYS",
  bootstrapPublic: "UBOOT",
};
const config = buildServerConfig({ ...base, authorization: calloutAuthorization(principals) });

interface ConfigUser {
  nkey: string;
  permissions: { publish: { allow: string[] }; subscribe: { allow: string[] } };
}
const appUsers = (config.accounts as unknown as { UNIBUS: { users: ConfigUser[] } }).UNIBUS.users;
const user = (nkey: string): ConfigUser => {
  const u = appUsers.find((x) => x.nkey === nkey);
  if (u === undefined) throw new Error(`no config user ${nkey}`);
  return u;
};

describe("server config for unibus up", () => {
  it("encrypts JetStream with a key read from $UNIBUS_JS_KEY, never a literal", () => {
    const text = renderNatsConfig(config);
    expect(text).toMatch(/cipher: "chachapoly"/);
    expect(text).toMatch(/key: \$UNIBUS_JS_KEY\n/);
    expect(text).toContain('store_dir: "/state/data"');
  });

  it("keeps lame duck short: a single node has no peer for clients to move to", () => {
    const text = renderNatsConfig(config);
    expect(text).toContain('lame_duck_grace_period: "1s"');
    // nats-server 2.15.1 rejects a duration under 30 s.
    expect(text).toContain('lame_duck_duration: "30s"');
  });

  it("fsyncs before every ack in a cluster; a single node keeps the server default unless UNIBUS_JS_SYNC_INTERVAL says otherwise", () => {
    expect(jetStreamSyncInterval({}, true)).toBe("always");
    expect(jetStreamSyncInterval({}, false)).toBeUndefined();
    expect(renderNatsConfig(config)).not.toContain("sync_interval");
    expect(jetStreamSyncInterval({ UNIBUS_JS_SYNC_INTERVAL: "always" }, false)).toBe("always");
    expect(jetStreamSyncInterval({ UNIBUS_JS_SYNC_INTERVAL: "10s" }, true)).toBe("10s");
    expect(jetStreamSyncInterval({ UNIBUS_JS_SYNC_INTERVAL: "1m30s" }, false)).toBe("1m30s");
    const synced = buildServerConfig({ ...base, syncInterval: "always", authorization: calloutAuthorization(principals) });
    expect(renderNatsConfig(synced)).toMatch(/jetstream: \{[^}]*sync_interval: "always"/);
    for (const bad of ["sometimes", "10", "-1s", "1 m", "always;"]) {
      expect(() => jetStreamSyncInterval({ UNIBUS_JS_SYNC_INTERVAL: bad }, true)).toThrow(/UNIBUS_JS_SYNC_INTERVAL/);
    }
  });

  it("limits the UNIBUS account's JetStream to the defaults, or to what UNIBUS_JS_MAX_* say", () => {
    expect(config.accounts).toMatchObject({ UNIBUS: { jetstream: DefaultAccountJetStreamLimits } });
    expect(renderNatsConfig(config)).toMatch(/jetstream: \{\s*max_memory: 268435456\s*max_file: 17179869184\s*max_streams: 4096\s*max_consumers: 65536\s*\}/);
    const limits = accountJetStreamLimitsFromEnv({ UNIBUS_JS_MAX_FILE: "1073741824", UNIBUS_JS_MAX_STREAMS: "10" });
    expect(limits).toEqual({ ...DefaultAccountJetStreamLimits, max_file: 1073741824, max_streams: 10 });
    const custom = buildServerConfig({ ...base, authorization: calloutAuthorization(principals, limits) });
    expect(custom.accounts).toMatchObject({ UNIBUS: { jetstream: limits } });
    for (const bad of ["0", "-1", "10GB", "1.5", ""]) {
      if (bad === "") expect(accountJetStreamLimitsFromEnv({ UNIBUS_JS_MAX_FILE: bad })).toEqual(DefaultAccountJetStreamLimits);
      else expect(() => accountJetStreamLimitsFromEnv({ UNIBUS_JS_MAX_FILE: bad })).toThrow(RangeError);
    }
  });

  it("listens on loopback with monitoring on loopback", () => {
    expect(config.host).toBe("127.0.0.1");
    expect(config.port).toBe(4222);
    expect(config.http).toBe("127.0.0.1:8222");
  });

  it("adds a loopback-only WebSocket listener for the admin panel only when asked, with TLS when the bus has it", () => {
    expect(config.websocket).toBeUndefined();
    const withWs = buildServerConfig({ ...base, websocketPort: 4280, authorization: calloutAuthorization(principals) });
    expect(withWs.websocket).toEqual({ listen: "127.0.0.1:4280", no_tls: true });
    // No websocket-level users or auth: browser clients go through the same callout as TCP clients.
    expect(renderNatsConfig(withWs)).toMatch(/websocket: \{\n\s+listen: "127\.0\.0\.1:4280"\n\s+no_tls: true\n\s*\}/);
    const container = buildServerConfig({ ...base, websocketPort: 8080, websocketHost: "0.0.0.0", authorization: calloutAuthorization(principals) });
    expect(container.websocket).toEqual({ listen: "0.0.0.0:8080", no_tls: true });
    const withTls = buildServerConfig({ ...base, websocketPort: 4280, tls: { certFile: "/s/server.pem", keyFile: "/s/server.key" }, authorization: calloutAuthorization(principals) });
    expect(withTls.websocket).toEqual({ listen: "127.0.0.1:4280", tls: { cert_file: "/s/server.pem", key_file: "/s/server.key" } });
  });

  it("sends every client through the encrypted callout; only services, system and bootstrap bypass it", () => {
    expect(config.authorization).toEqual({
      auth_callout: {
        issuer: "AISSUER",
        xkey: "XCURVE",
        account: "UNIBUS",
        auth_users: expect.arrayContaining(["USYS", "UBOOT", ...ALL_SERVICES.map((s) => `U_${s}`)]),
      },
    });
    const authUsers = (config.authorization as { auth_callout: { auth_users: string[] } }).auth_callout.auth_users;
    expect(authUsers).toHaveLength(ALL_SERVICES.length + 2);
    expect(config.accounts).toMatchObject({ SYS: { users: [{ nkey: "USYS" }] } });
  });

  it("the bootstrap identity may publish only admin.bootstrap and read only its own inbox", () => {
    expect(user("UBOOT").permissions).toEqual({
      publish: { allow: [Subjects.membership.adminBootstrap] },
      subscribe: { allow: ["_INBOX.UBOOT.>"] },
    });
  });

  it("each service reaches only its own endpoints and buckets", () => {
    const membership = user("U_membership").permissions;
    expect(membership.subscribe.allow).toContain("unibus.v1.membership.>");
    for (const b of ["users", "rooms", "members", "rooms_by_member", "nonces"]) expect(membership.publish.allow).toContain(`$KV.${b}.>`);
    const gateway = user("U_replica-gateway").permissions;
    expect(gateway.subscribe.allow).toContain("unibus.v1.replica.>");
    // Its session, history and lifecycle buckets and `nonces`; `users` only read, never written.
    expect(gateway.publish.allow.filter((x) => x.startsWith("$KV."))).toEqual([
      "$KV.replica_sessions.>",
      "$KV.replica_history.>",
      "$KV.replica_nodes.>",
      "$KV.replica_tickets.>",
      "$KV.replica_cuks.>",
      "$KV.nonces.>",
    ]);
    expect(gateway.publish.allow).toContain("$JS.API.STREAM.MSG.GET.KV_users");
    expect(gateway.publish.allow).toContain(Subjects.replicaGateway.seedRequest);
    const blobs = user("U_blobs").permissions;
    expect(blobs.subscribe.allow).toContain("unibus.v1.blobs.>");
    expect(blobs.publish.allow).toEqual(expect.arrayContaining(["$O.blobs.>", "$KV.nonces.>", "$JS.API.STREAM.MSG.GET.KV_members"]));
    // Room checks read `members`; blobs must never be able to write a grant.
    expect(blobs.publish.allow.filter((x) => x.startsWith("$KV.") && x !== "$KV.nonces.>")).toEqual([]);
    const keys = user("U_keys").permissions;
    expect(keys.subscribe.allow).toContain("unibus.v1.keys.>");
    expect(keys.publish.allow).toEqual(expect.arrayContaining(["$KV.room_keys.>", "$KV.agreement_keys.>", "$KV.nonces.>", "$JS.API.STREAM.MSG.GET.KV_members"]));
    // Security reads go to the stream leader: no service may direct-get a KV bucket (a lagging replica would answer).
    for (const u of ["U_membership", "U_keys", "U_blobs", "U_replica-gateway"]) {
      expect(user(u).permissions.publish.allow.filter((x) => x.startsWith("$JS.API.DIRECT.GET.KV_"))).toEqual([]);
    }
    // Epoch checks read `members` and `users`; keys must never be able to write either.
    expect(keys.publish.allow.filter((x) => x.startsWith("$KV.") && !["$KV.room_keys.>", "$KV.agreement_keys.>", "$KV.nonces.>"].includes(x))).toEqual([]);
    expect(user("U_membership").permissions.publish.allow).toContain("unibus.room.*.membership");
    // rooms.history: only membership reads room streams, by batch direct get.
    expect(user("U_membership").permissions.publish.allow).toContain("$JS.API.DIRECT.GET.*");
    // healthz reads posture only: account and stream info, leader gets and a watch of `users`, micro discovery.
    const healthz = user("U_healthz").permissions;
    expect(healthz.subscribe.allow).toContain("$SRV.>");
    expect(healthz.publish.allow).toEqual(expect.arrayContaining(["$JS.API.INFO", "$JS.API.STREAM.INFO.KV_users", "$JS.API.STREAM.INFO.OBJ_blobs", "$JS.API.STREAM.MSG.GET.KV_users", "$SRV.>"]));
    const js = healthz.publish.allow.filter((x) => x.startsWith("$JS.") || x.startsWith("$KV.") || x.startsWith("$O."));
    // The watch of `users` (the admin check's fenced copy): consumers only read.
    const usersWatch = (x: string): boolean => x.startsWith("$JS.API.CONSUMER.") ? x.includes(".KV_users") : x === "$JS.FC.KV_users.>";
    expect(js.filter((x) => !(x === "$JS.API.INFO" || x.startsWith("$JS.API.STREAM.INFO.") || x === "$JS.API.STREAM.MSG.GET.KV_users" || usersWatch(x))), "healthz may only read").toEqual([]);
    expect(js.some((x) => !usersWatch(x) && (x.includes("*") || x.includes(">"))), "healthz JetStream grants are literal but the users watch").toBe(false);
  });
});
