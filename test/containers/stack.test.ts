import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect as natsConnect } from "@nats-io/transport-node";
import { createIdentity, nkeyAuthenticator } from "@unibus/crypto";
import { ErrorReason, UnibusError, connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { eventually, retryUntil } from "@unibus/testing";
import { containerOutputs, inspectContainers, readStackSecrets, secretsIn } from "./secrets.js";
import { startComposeStack } from "./stack.js";
import type { ComposeStack } from "./stack.js";

const run = promisify(execFile);
const SERVICES = ["auth-callout", "blobs", "healthz", "keys", "membership", "replica-gateway"];

describe("the compose stack (docker-compose.yml) in real Docker", () => {
  let stack: ComposeStack;
  let admin: UnibusClient;
  const clients: UnibusClient[] = [];

  beforeAll(async () => {
    stack = await startComposeStack({ project: "unibus-ct", replicas: { membership: 3, keys: 2 } });
    process.stdout.write(`compose stack healthy in ${stack.secondsToHealthy.toFixed(1)} s\n`);
    admin = await connect({ url: stack.url, identity: stack.admin });
    clients.push(admin);
  });

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await stack?.stop();
  });

  it("every container runs as a non-root user", async () => {
    const ids = (await run("docker", ["ps", "-q", "--filter", "label=com.docker.compose.project=unibus-ct"])).stdout.split("\n").filter(Boolean);
    expect(ids.length).toBeGreaterThanOrEqual(9);
    const { stdout } = await run("docker", ["inspect", "-f", "{{.Config.User}}", ...ids]);
    for (const user of stdout.trim().split("\n")) expect(user).toBe("10001:10001");
  });

  it("no secret of the stack is in any container's docker inspect (Env, Cmd, Args, Labels, Mounts), log or process argv, in any encoding", async () => {
    const secrets = await readStackSecrets("unibus-ct");
    // What init generated: the JetStream key, both callout seeds, admin #0 and every identity's seeds.
    expect(secrets.map((s) => s.source)).toEqual(
      expect.arrayContaining(["secrets/jetstream.key", "secrets/callout-issuer.seed", "secrets/callout-xkey.seed", "admin.id", "identities/membership.id", "identities/bootstrap.id"]),
    );
    expect(secrets.filter((s) => s.forms.length === 0)).toEqual([]);
    const docs = await inspectContainers("unibus-ct");
    // The running containers and the two exited one-shots (init, bootstrap).
    expect(docs.size).toBeGreaterThanOrEqual(11);
    expect(secretsIn(docs, secrets)).toEqual([]);
    // Nor in any container's log, nor in the argv of any process running in one.
    const { logs, argv } = await containerOutputs("unibus-ct");
    expect(logs.size).toBe(docs.size);
    expect([...argv.values()].join("\n")).toMatch(/nats-server/);
    expect(secretsIn(logs, secrets)).toEqual([]);
    expect(secretsIn(argv, secrets)).toEqual([]);
    // Control: the same scan finds the key once it is in a container's environment.
    const [name, doc] = [...docs][0]!;
    const key = secrets.find((s) => s.source === "secrets/jetstream.key")!;
    expect(secretsIn(new Map([[name, doc.replace('"Env":[', `"Env":["UNIBUS_JS_KEY=${key.forms[0]!}",`)]]), secrets)).toEqual([`${name}: secrets/jetstream.key`]);
  });

  it("/healthz reports the server's own posture from its monitoring port on the compose network, not nulls", async () => {
    const res = await fetch(`${stack.healthzUrl}/healthz`);
    const posture = (await res.json()) as { server_version: string | null; mode: string | null; cluster_size: number | null; tls: { client: boolean | null }; sync_policy: string | null; at_rest: { encrypted: boolean | null } };
    expect(posture).toMatchObject({ mode: "single", cluster_size: 1, tls: { client: false }, at_rest: { encrypted: true } });
    expect(posture.server_version).toMatch(/^2\.\d+\.\d+/);
    expect(posture.sync_policy).not.toBeNull();
  });

  it("$SRV.INFO from the host lists the six services, with membership x3 and keys x2 in one queue group each", async () => {
    const nc = admin.nc;
    const seen = new Map<string, number>();
    // The admin may only receive replies under its own inbox prefix (architecture §4).
    const inbox = nc.subscribe(`_INBOX.${stack.admin.principal}.srvinfo.${Date.now()}`);
    // Scatter-gather: every instance answers $SRV.INFO on the same reply subject.
    nc.publish("$SRV.INFO", undefined, { reply: inbox.getSubject() });
    // Done as soon as every instance the compose file starts has answered; the
    // timer only bounds a stack that is missing one (the assertions then say which).
    const expected = SERVICES.length + 2 + 1;
    const bound = setTimeout(() => inbox.unsubscribe(), 15_000);
    let answers = 0;
    for await (const m of inbox) {
      const info = m.json<{ name: string }>();
      seen.set(info.name, (seen.get(info.name) ?? 0) + 1);
      if (++answers === expected) inbox.unsubscribe();
    }
    clearTimeout(bound);
    expect([...seen.keys()].sort()).toEqual(SERVICES);
    expect(seen.get("membership")).toBe(3);
    expect(seen.get("keys")).toBe(2);
  });

  it("a user added by the admin connects and uses a room over the published port", async () => {
    const alice = createIdentity({ label: "alice" });
    await admin.users.add(alice.principal, "alice", "member");
    const { room } = await admin.rooms.create("ops", { persist: false, encrypt: true });
    await admin.rooms.invite(room.id, alice.principal);
    const client = await connect({ url: stack.url, identity: alice });
    clients.push(client);
    const subject = `unibus.room.${room.id}.x`;
    // The invite kicks alice's earlier sessions; retry until her permissions include the room.
    const got = await retryUntil(
      async () => {
        const sub = client.nc.subscribe(subject, { max: 1, timeout: 500 });
        await client.nc.flush().catch(() => undefined);
        client.nc.publish(subject, "hello from the host");
        for await (const m of sub) return m.string();
        throw new Error("no frame");
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    expect(got).toBe("hello from the host");
  });

  it("an unknown key is denied at connect", async () => {
    const stranger = createIdentity({ label: "stranger" });
    await expect(
      natsConnect({ servers: stack.url, reconnect: false, authenticator: nkeyAuthenticator(stranger.signingKey) }),
    ).rejects.toThrow(/authoriz/i);
  });

  it("killing one membership replica of three while users.add flows loses no acknowledged request", async () => {
    const [victim] = await stack.replicas("membership");
    expect(victim).toBeDefined();
    // A second admin that never changes its own access: admin #0 created a
    // room above, and the kick that applies its new permissions would drop
    // replies in flight, which would measure the kick rather than the kill.
    const loader = createIdentity({ label: "loader" });
    // Admin #0's late kick may drop this very request (503 connection_lost,
    // outcome unknown): ask again, and a 409 then means the first one landed.
    for (let attempt = 0; ; attempt++) {
      try {
        await admin.users.add(loader.principal, "loader", "admin");
        break;
      } catch (err) {
        if (err instanceof UnibusError && err.code === 409) break;
        if (!(err instanceof UnibusError && err.reason === ErrorReason.ConnectionLost) || attempt >= 3) throw err;
      }
    }
    const client = await connect({ url: stack.url, identity: loader, requestTimeoutMs: 2_000 });
    clients.push(client);
    await client.users.list();
    const acked: string[] = [];
    let failed = 0;
    let lastError = "";
    let stop = false;
    const worker = async (): Promise<void> => {
      while (!stop) {
        const id = createIdentity();
        try {
          await client.users.add(id.principal, `u${acked.length}-${failed}-${id.principal.slice(1, 7)}`.toLowerCase(), "member");
          acked.push(id.principal);
        } catch (err) {
          lastError = (err as Error).message;
          // Not acknowledged (e.g. the replica died mid-request): the caller may retry; nothing is promised.
          failed += 1;
        }
      }
    };
    const workers = Array.from({ length: 4 }, () => worker());
    // Kill only once the load is flowing: acknowledgements observed, not a guessed pause.
    await eventually(() => acked.length, (n) => n >= 20, { timeoutMs: 30_000, intervalMs: 50, what: "users.add acknowledged before the kill" });
    const before = acked.length;
    await run("docker", ["kill", "--signal", "KILL", victim as string]);
    // Keep the load on until the surviving replicas have acknowledged more
    // work after the kill (bounded, so a dead stack fails the assertion below).
    await eventually(() => acked.length, (n) => n >= before + 20, { timeoutMs: 20_000, intervalMs: 200 }).catch(() => undefined);
    stop = true;
    await Promise.all(workers);
    process.stdout.write(`users.add: ${acked.length} acknowledged (${before} before the kill), ${failed} not (last error: ${lastError || "none"})\n`);
    expect(acked.length).toBeGreaterThan(before);
    const listed = new Set((await client.users.list()).users.map((u) => u.principal));
    const missing = acked.filter((p) => !listed.has(p));
    expect(missing).toEqual([]);
  });
});
