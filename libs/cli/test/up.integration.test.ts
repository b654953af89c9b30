// Runs the real `unibus up` (nats-server + every service as processes) in a
// temp state dir, as `npm start` would, and checks what an operator sees.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdir, readFile, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { eventually, freeLoopbackPort, spawnWatched } from "@unibus/testing";
import type { WatchedProcess } from "@unibus/testing";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { loadIdentityFile, nkeyAuthenticator } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { serviceAvailability } from "../src/up/services.js";

const BIN = fileURLToPath(new URL("../bin/unibus.mjs", import.meta.url));
const run = promisify(execFile);

/** A CLI process with its output captured; `waitFor` resolves as soon as a pattern shows up. */
type CliProcess = WatchedProcess;

function spawnCli(env: NodeJS.ProcessEnv, args: string[], stdin: "ignore" | "pipe" = "ignore"): CliProcess {
  return spawnWatched(process.execPath, [BIN, ...args], { env, stdin, label: `unibus ${args.join(" ")}` });
}

function startUp(env: NodeJS.ProcessEnv): CliProcess {
  return spawnCli(env, ["up"]);
}

async function microLs(env: NodeJS.ProcessEnv): Promise<{ name: string; version: string; id: string }[]> {
  const { stdout } = await run(process.execPath, [BIN, "micro", "ls", "--json", "--timeout", "1000"], { env });
  return JSON.parse(stdout) as { name: string; version: string; id: string }[];
}

/** Expected micro names of the services present in this checkout. */
const expected = serviceAvailability().filter((s) => s.available).map((s) => s.name);

async function waitForServices(env: NodeJS.ProcessEnv, up: CliProcess, ms: number): Promise<{ name: string; version: string; id: string }[]> {
  let last: { name: string; version: string; id: string }[] = [];
  const exited = new Error("unibus up exited early");
  return eventually(
    async () => {
      if (up.child.exitCode !== null) throw exited;
      // `micro ls` is asked only once up says the services are started; until they all register it lists fewer.
      if (up.output().includes("Next: npx unibus micro ls")) last = await microLs(env).catch(() => last);
      return last;
    },
    (ls) => expected.every((s) => ls.some((i) => i.name === s)),
    { timeoutMs: ms, intervalMs: 300 },
  ).catch((err: unknown) => {
    throw new Error(err === exited ? `unibus up exited early:\n${up.output()}` : `services did not all appear; last ls: ${JSON.stringify(last)}\n${up.output()}`);
  });
}

async function stopUp(up: CliProcess): Promise<number | null> {
  up.child.kill("SIGTERM");
  return up.exited;
}

/** Runs the CLI; resolves with its exit code and output instead of throwing on a non-zero exit (code null: killed after 30 s). */
async function cli(env: NodeJS.ProcessEnv, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { env, timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number | null; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function cliJson<T>(env: NodeJS.ProcessEnv, ...args: string[]): Promise<T> {
  const r = await cli(env, ...args, "--json");
  if (r.code !== 0) throw new Error(`unibus ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** True if the server reports a permission violation for `subject` after `action`. */
async function violates(nc: NatsConnection, subject: string, action: () => void): Promise<boolean> {
  const status = nc.status();
  const seen = (async () => {
    for await (const s of status) {
      if (s.type === "error" && s.error.name === "PermissionViolationError" && (s.error as { subject?: string }).subject === subject) return true;
    }
    return false;
  })();
  action();
  await nc.flush().catch(() => undefined);
  const result = await Promise.race([seen, new Promise<boolean>((r) => setTimeout(() => r(false), 1_000))]);
  (status as unknown as { stop(): void }).stop();
  return result;
}

/** Resolves once `client` has reconnected (e.g. after a kick for a membership change). */
function reconnected(client: UnibusClient, ms: number): Promise<void> {
  const it = client.status();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no reconnect within ${ms} ms`)), ms);
    void (async () => {
      for await (const s of it) {
        if (s.type === "reconnect") {
          clearTimeout(timer);
          (it as unknown as { stop(): void }).stop();
          resolve();
          return;
        }
      }
    })();
  });
}

interface UserJson {
  principal: string;
  handle: string;
  role: string;
  status: string;
}

describe("unibus up (real processes, auth callout on)", () => {
  let home: string;
  let env: NodeJS.ProcessEnv;
  const running: CliProcess[] = [];
  const clients: UnibusClient[] = [];
  // Shared by the steps below, which run in order against one `unibus up`.
  let first: CliProcess;
  let admin: Identity;
  let alice: Identity;
  let handle: string;

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), "unibus-up-"));
    const { UNIBUS_URL: _u, UNIBUS_IDENTITY: _i, ...rest } = process.env;
    env = { ...rest, UNIBUS_HOME: home, UNIBUS_PORT: String(await freeLoopbackPort()), UNIBUS_MONITOR_PORT: String(await freeLoopbackPort()), UNIBUS_WS_PORT: String(await freeLoopbackPort()) };
  });
  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    for (const up of running) if (up.child.exitCode === null) up.child.kill("SIGKILL");
    await rm(home, { recursive: true, force: true });
  });

  it("admits only allowlisted principals, each to its own rooms", { timeout: 60_000 }, async () => {
    first = startUp(env);
    running.push(first);
    const services = await waitForServices(env, first, 25_000);
    for (const s of expected) {
      const instance = services.find((i) => i.name === s);
      expect(instance?.version, `${s} listed with a version`).toMatch(/^\d+\.\d+\.\d+/);
    }
    expect(first.output()).toMatch(/auth callout: +on \(xkey/);
    expect(first.output()).not.toContain("NOT enabled");

    // info / stats / ping speak the same protocol; an unknown name is a failure.
    const [info, ping, unknownService, schema] = await Promise.all([
      cli(env, "micro", "info", "membership"),
      cli(env, "micro", "ping", "healthz", "--json"),
      cli(env, "micro", "info", "no-such-service", "--timeout", "500"),
      cli(env, "micro", "schema", "membership", "users.add"),
    ]);
    expect(info.stdout).toMatch(/^membership \d+\.\d+\.\d+ \(/);
    expect(JSON.parse(ping.stdout)).toEqual([expect.objectContaining({ name: "healthz", rtt_ms: expect.any(Number) })]);
    expect(unknownService.code).toBe(1);

    // The schemas come from the running service itself, named by the subject's tail.
    expect(schema.code, schema.stderr).toBe(0);
    expect(JSON.parse(schema.stdout)).toMatchObject({
      service: "membership",
      subject: "unibus.v1.membership.users.add",
      access: "admin",
      mutates: true,
      schemaVersion: expect.stringMatching(/^[0-9a-f]{16}$/),
      request: { id: "membership.users.add.request", schema: { $id: "membership.users.add.request", required: ["principal", "handle", "role"] } },
      reply: { id: "membership.users.add.reply" },
    });

    const envFile = await readFile(join(home, "env"), "utf8");
    expect((await stat(join(home, "env"))).mode & 0o777).toBe(0o600);
    expect(envFile).toContain(`UNIBUS_IDENTITY=${join(home, "admin.id")}`);
    for (const f of ["secrets/callout-issuer.seed", "secrets/callout-xkey.seed", "identities/system.id", "identities/bootstrap.id"]) {
      expect((await stat(join(home, f))).mode & 0o777, f).toBe(0o600);
    }
    // The running server's own files: its log names clients and accounts.
    expect((await stat(join(home, "server"))).mode & 0o777).toBe(0o700);
    const serverFiles = await readdir(join(home, "server"));
    expect(serverFiles).toEqual(expect.arrayContaining(["nats-server.conf", "nats-server.log", "nats-server.pid"]));
    expect(serverFiles.some((f) => f.endsWith(".ports"))).toBe(true);
    for (const f of serverFiles) expect((await stat(join(home, "server", f))).mode & 0o777, `server/${f}`).toBe(0o600);
    admin = await loadIdentityFile(join(home, "admin.id"));
    const url = /UNIBUS_URL=(.*)/.exec(envFile)?.[1] ?? "";
    expect(first.output()).toContain(`bootstrapped admin #0 ${admin.principal}`);

    // Bootstrap is idempotent: a second run reports the admin and changes nothing.
    const again = await cliJson<{ created: boolean; user: UserJson }>(env, "admin", "bootstrap");
    expect(again).toMatchObject({ created: false, user: { principal: admin.principal, role: "admin" } });
    const other = await cli(env, "identity", "create", "--out", join(home, "other-admin.id"));
    expect(other.code).toBe(0);
    expect((await cliJson<{ created: boolean }>(env, "admin", "bootstrap", "--identity", join(home, "other-admin.id"))).created).toBe(false);
    expect(await cliJson<UserJson[]>(env, "users", "list")).toEqual([expect.objectContaining({ principal: admin.principal, role: "admin" })]);

    // A new user, added by the admin, connects with the SDK.
    handle = `alice-${Date.now()}`;
    expect((await cli(env, "identity", "create", "--out", join(home, "alice.id"))).code).toBe(0);
    alice = await loadIdentityFile(join(home, "alice.id"));
    expect(await cliJson<{ user: UserJson }>(env, "users", "add", alice.principal, "--handle", handle)).toMatchObject({ user: { role: "member", status: "active" } });
    const dup = await cli(env, "users", "add", alice.principal, "--handle", handle);
    expect([dup.code, dup.stderr]).toEqual([1, expect.stringContaining("conflict:")]);
    const aliceClient = await connect({ url, identity: alice });
    clients.push(aliceClient);
    const forbidden = await cli(env, "users", "list", "--identity", join(home, "alice.id"));
    expect([forbidden.code, forbidden.stderr]).toEqual([1, expect.stringContaining("forbidden:")]);

    // The admin creates two rooms and invites the user to one; the user is kicked and comes back with it.
    const { room } = await cliJson<{ room: { id: string } }>(env, "rooms", "create", "ops");
    const { room: otherRoom } = await cliJson<{ room: { id: string } }>(env, "rooms", "create", "secret");
    const back = reconnected(aliceClient, 5_000);
    await cliJson(env, "rooms", "invite", room.id, alice.principal);
    await back;
    const nc = aliceClient.nc;
    const subject = `unibus.room.${room.id}.x`;
    const sub = nc.subscribe(subject, { max: 1 });
    await nc.flush();
    nc.publish(subject, "hello");
    for await (const m of sub) expect(m.string()).toBe("hello");
    expect(await violates(nc, `unibus.room.${otherRoom.id}.x`, () => nc.publish(`unibus.room.${otherRoom.id}.x`, "x"))).toBe(true);
    expect(await violates(nc, `unibus.room.${otherRoom.id}.x`, () => nc.subscribe(`unibus.room.${otherRoom.id}.x`))).toBe(true);
    expect(await violates(nc, "$KV.>", () => nc.subscribe("$KV.>"))).toBe(true);
    expect(await violates(nc, "$KV.users.x", () => nc.publish("$KV.users.x", "x"))).toBe(true);

    // An identity nobody added is refused.
    const stranger = await cli(env, "micro", "ls", "--identity", join(home, "other-admin.id"));
    expect([stranger.code, stranger.stderr]).toEqual([1, expect.stringContaining("refused")]);

    // Revoked: the live connection is closed and a new one is refused.
    await aliceClient.close();
    expect(await cliJson<{ user: UserJson }>(env, "users", "revoke", alice.principal)).toMatchObject({ user: { status: "revoked" } });
    await expect(natsConnect({ servers: url, authenticator: nkeyAuthenticator(alice.signingKey), reconnect: false })).rejects.toThrow();
  });

  it("serves healthz HTTP on loopback at the UNIBUS_HEALTHZ_URL it writes to the env file; `unibus status` reads the posture", { timeout: 45_000 }, async () => {
    const healthzUrl = /^UNIBUS_HEALTHZ_URL=(.*)$/m.exec(await readFile(join(home, "env"), "utf8"))?.[1] ?? "";
    expect(healthzUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(`${healthzUrl}/livez`)).status).toBe(200);
    // Every bus bucket and service, under the healthz user's production grants.
    const ready = await eventually(async () => (await fetch(`${healthzUrl}/readyz`)).status, (s) => s === 200, { timeoutMs: 30_000, intervalMs: 250, what: "readyz 200" });
    expect(ready).toBe(200);
    const status = await cliJson<{ ready: boolean; at_rest: { encrypted: boolean }; buckets: { name: string; ok: boolean }[]; services: { name: string; instances: number }[] }>(env, "status");
    expect(status).toMatchObject({ ready: true, at_rest: { encrypted: true } });
    expect(status.buckets.map((b) => b.name)).toEqual(expect.arrayContaining(["users", "nonces", "room_keys", "replica_sessions", "blobs"]));
    expect(status.services.filter((s) => s.instances < 1)).toEqual([]);
  });

  it("passes `unibus check`; members made with the CLI chat in a room and share an encrypted file", { timeout: 45_000 }, async () => {
    // The operator's live check, as the admin `unibus up` bootstrapped.
    const check = await cli(env, "check", "--json");
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(JSON.parse(check.stdout)).toMatchObject({ ok: true, rooms: [{ sent: 100, received: 100, lost: 0, rejects: 0 }] });

    // Three new identities, each put on the allowlist by the admin.
    const member = async (name: string): Promise<{ principal: string; handle: string; env: NodeJS.ProcessEnv }> => {
      const path = join(home, `${name}.id`);
      expect((await cli(env, "identity", "create", "--out", path)).code).toBe(0);
      const { principal } = await loadIdentityFile(path);
      const handle = `${name}-${Date.now()}`;
      await cliJson(env, "users", "add", principal, "--handle", handle);
      return { principal, handle, env: { ...env, UNIBUS_IDENTITY: path } };
    };
    const [owner, peer, outsider] = await Promise.all([member("owner"), member("peer"), member("outsider")]);
    const { room } = await cliJson<{ room: { id: string } }>(owner.env, "rooms", "create", "chat");
    await cliJson(owner.env, "rooms", "invite", room.id, peer.principal);

    // Two `unibus chat` processes; the peer first, so its key is in the owner's first epoch.
    const chat = (who: { env: NodeJS.ProcessEnv }): CliProcess => {
      const p = spawnCli(who.env, ["chat", room.id], "pipe");
      running.push(p);
      return p;
    };
    const joined = /^joined /m;
    const peerChat = chat(peer);
    await peerChat.waitFor("stderr", joined);
    expect(peerChat.stderr()).toContain("registered your agreement key with the keys service");
    const ownerChat = chat(owner);
    await ownerChat.waitFor("stderr", joined);
    expect(ownerChat.stderr()).toContain("the room had no key yet and you own it: started epoch 1");
    // A member sees a sender by handle (members may read their room's handles).
    const line = (from: { handle: string }, text: string): RegExp => new RegExp(`^\\[\\d\\d:\\d\\d:\\d\\d\\] ${from.handle}: ${text}$`, "m");
    ownerChat.type("hello from the owner");
    await peerChat.waitFor("stdout", line(owner, "hello from the owner"));
    peerChat.type("hi back from the peer");
    await ownerChat.waitFor("stdout", line(peer, "hi back from the peer"));
    ownerChat.type("/quit");
    peerChat.type("/quit");
    expect(await Promise.all([ownerChat.exitCode(), peerChat.exitCode()])).toEqual([0, 0]);
    expect(peerChat.stderr() + ownerChat.stderr()).not.toContain("rejected");

    // A ~1 MB file: one member puts it, the other gets it with the key; a user outside the room may not.
    const data = randomBytes(1024 * 1024 + 17);
    await writeFile(join(home, "blob.in"), data);
    const put = await cliJson<{ blobId: string; key: string }>(owner.env, "blob", "put", room.id, join(home, "blob.in"));
    const get = (who: { env: NodeJS.ProcessEnv }, out: string): ReturnType<typeof cli> =>
      cli({ ...who.env, UNIBUS_BLOB_KEY: put.key }, "blob", "get", room.id, put.blobId, "--out", join(home, out));
    const [got, refused] = await Promise.all([get(peer, "blob.out"), get(outsider, "blob.outsider")]);
    expect(got.code, got.stderr).toBe(0);
    expect((await readFile(join(home, "blob.out"))).equals(data)).toBe(true);
    expect([refused.code, refused.stderr]).toEqual([1, expect.stringContaining("forbidden")]);
    await expect(stat(join(home, "blob.outsider"))).rejects.toThrow();
  });

  it("refuses a second `up` while one runs, stops cleanly, and a second run reuses all state", { timeout: 60_000 }, async () => {
    // A second `up` on the same home is refused while the first runs.
    const second = await cli(env, "up");
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/another `unibus up` \(pid \d+\)/);

    expect(await stopUp(first)).toBe(0);
    expect(first.output()).toContain("[unibus up] stopped");
    await expect(stat(join(home, "up.lock"))).rejects.toThrow();

    // At rest, the store holds no plaintext copy of the user's handle.
    const files = await readdir(join(home, "data"), { recursive: true });
    expect(files.some((f) => f.includes("KV_users"))).toBe(true);
    for (const f of files) {
      const p = join(home, "data", f);
      if ((await stat(p)).isFile()) expect((await readFile(p)).includes(handle), `${f} has plaintext`).toBe(false);
    }

    // The second run reuses every key, identity and record: same admin, the revocation still holds.
    const rerun = startUp(env);
    running.push(rerun);
    await waitForServices(env, rerun, 25_000);
    expect(rerun.output()).not.toContain("created");
    expect(rerun.output()).toContain(`admin #0 exists: ${admin.principal}`);
    expect(await cliJson<UserJson>(env, "users", "get", alice.principal)).toMatchObject({ handle, status: "revoked" });
    expect(await stopUp(rerun)).toBe(0);
  });
});

describe("unibus up with a nats-server older than the minimum", () => {
  let home: string;
  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), "unibus-up-old-"));
  });
  afterAll(async () => {
    await rm(home, { recursive: true, force: true });
  });

  it("refuses NATS_SERVER_BIN 2.10.27 at start, saying what to do, and starts no server", { timeout: 30_000 }, async () => {
    // A stand-in that only answers --version: the finder must stop before running it as a server.
    const fake = join(home, "nats-server-2.10");
    await writeFile(fake, '#!/bin/sh\n[ "$1" = "--version" ] && { echo "nats-server: v2.10.27"; exit 0; }\necho started >> "$0.ran"\n', { mode: 0o755 });
    const { UNIBUS_URL: _u, UNIBUS_IDENTITY: _i, ...rest } = process.env;
    const env = { ...rest, UNIBUS_HOME: join(home, "state"), UNIBUS_PORT: String(await freeLoopbackPort()), UNIBUS_MONITOR_PORT: String(await freeLoopbackPort()), UNIBUS_WS_PORT: String(await freeLoopbackPort()), NATS_SERVER_BIN: fake };
    const r = await cli(env, "up");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/NATS_SERVER_BIN: nats-server 2\.10\.27 at .* is too old \(need >= 2\.15\.0\)/);
    expect(r.stderr).toMatch(/install nats-server >= 2\.15\.0 on PATH, or set NATS_SERVER_BIN/);
    await expect(stat(`${fake}.ran`)).rejects.toThrow(/ENOENT/);
  });
});
