import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import { createIdentity, randomBytes, writeIdentityFile } from "@unibus/crypto";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { MembershipBucket, createMembershipService } from "@unibus/membership";
import type { RunningMembershipService } from "@unibus/membership";
import { StaticRoomKeys, connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { ExitCode, runCli } from "@unibus/cli";
import { recordingIo } from "@unibus/cli/test-io";

const KiB = 1024;
let server: TestServer;
let svc: RunningMembershipService;
let owner: UnibusClient;
let dir: string;
let env: Record<string, string>;
const identity = createIdentity();

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  const nc = await server.connect();
  const boot = createIdentity();
  svc = await createMembershipService(nc, {
    logger: pino({ level: "silent" }),
    bootstrapPrincipal: boot.principal,
    quotas: { defaults: { maxBytes: 64 * KiB, maxMsgs: 100, maxMsgSize: 8 * KiB, maxAgeSeconds: 86_400 }, ceilings: { maxBytes: 1024 * KiB, maxMsgs: 1000, maxMsgSize: 64 * KiB, maxAgeSeconds: 7 * 86_400 } },
  });
  const bootClient = await connect({ url: server.url, identity: boot.signingKey });
  await bootClient.admin.bootstrap(identity.principal, "root");
  await bootClient.close();
  owner = await connect({ url: server.url, identity: identity.signingKey });
  dir = await mkdtemp(join(tmpdir(), "unibus-rooms-cli-"));
  await writeIdentityFile(join(dir, "id.json"), identity);
  env = { UNIBUS_URL: server.url, UNIBUS_IDENTITY: join(dir, "id.json") };
});

afterAll(async () => {
  await owner?.close();
  await svc?.stop();
  await server?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = recordingIo({ env, cwd: dir });
  const code = await runCli(argv, io);
  return { code, out: io.stdout.join("\n"), err: io.stderr.join("\n") };
}

describe("unibus rooms create --max-* / rooms info", () => {
  it("creates a persisted room with the owner's quota and prints usage against it, down to FULL", async () => {
    const created = await cli(["rooms", "create", "ops", "--persist", "--max-msgs", "3", "--max-age", "3600", "--json"]);
    expect(created.code).toBe(ExitCode.ok);
    const { room, quota } = JSON.parse(created.out) as { room: { id: string }; quota: unknown };
    expect(quota).toEqual({ maxBytes: 64 * KiB, maxMsgs: 3, maxMsgSize: 8 * KiB, maxAgeSeconds: 3600 });

    const empty = await cli(["rooms", "info", room.id]);
    expect(empty.code).toBe(ExitCode.ok);
    expect(empty.out).toMatch(/^bytes\s+0 B\s+64\.0 KiB\s+0\.0%$/m);
    expect(empty.out).toMatch(/^messages\s+0\s+3\s+0\.0%$/m);
    expect(empty.out).toMatch(/^max frame\s+-\s+8\.0 KiB/m);
    expect(empty.out).toMatch(/^max age\s+oldest -\s+1h/m);
    expect(empty.out).not.toContain("FULL");

    const r = owner.room(room.id, new StaticRoomKeys().set(room.id, 0, randomBytes(32)));
    try {
      for (const text of ["a", "b", "c"]) await r.publish(text);
    } finally {
      await r.close();
    }
    const full = await cli(["rooms", "info", room.id]);
    expect(full.out).toMatch(/^messages\s+3\s+3\s+100\.0%$/m);
    expect(full.out).toMatch(/^max age\s+oldest \d+s\s+1h/m);
    expect(full.out).toMatch(/^FULL: new messages are refused \(room_full\)/m);
    const asJson = JSON.parse((await cli(["rooms", "info", room.id, "--json"])).out) as { usage: { messages: number; bytes: number } };
    expect(asJson.usage.messages).toBe(3);
    expect(asJson.usage.bytes).toBeGreaterThan(0);
  });

  it("says a live-only room has no quota", async () => {
    const { room } = await owner.rooms.create("live", { persist: false, encrypt: true });
    const info = await cli(["rooms", "info", room.id]);
    expect(info.code).toBe(ExitCode.ok);
    expect(info.out).toContain("live-only room: no stream, nothing stored, no quota");
  });

  it("reports a quota above the ceiling as the service's refusal, and a non-number as a usage error", async () => {
    const before = await svc.store.listRoomIds();
    const over = await cli(["rooms", "create", "greedy", "--persist", "--max-bytes", String(2048 * KiB)]);
    expect(over.code).toBe(ExitCode.failure);
    expect(over.err).toMatch(/quota_above_ceiling|above the ceiling/);
    const typo = await cli(["rooms", "create", "typo", "--persist", "--max-bytes", "10MB"]);
    expect(typo.code).toBe(ExitCode.usage);
    expect(typo.err).toMatch(/--max-bytes must be a whole number/);
    expect(await svc.store.listRoomIds()).toEqual(before);
  });
});

describe("unibus rooms log [--verify]", () => {
  it("prints a live room's log and verifies it; a rolled-back log or a tampered entry makes --verify fail with its reason", async () => {
    const created = await cli(["rooms", "create", "audited", "--json"]);
    const { room } = JSON.parse(created.out) as { room: { id: string } };
    const guest = createIdentity();
    await owner.users.add(guest.principal, "guest", "member");
    await owner.rooms.invite(room.id, guest.principal);
    await owner.rooms.remove(room.id, guest.principal);
    const ok = await cli(["rooms", "log", room.id, "--verify"]);
    expect(ok.code).toBe(ExitCode.ok);
    expect(ok.out).toMatch(/\binvite\b/);
    expect(ok.out).toMatch(/verified: 3 entries, head 2 /);
    const json = JSON.parse((await cli(["rooms", "log", room.id, "--verify", "--json"])).out) as { verified: boolean; members: Record<string, string> };
    expect(json).toMatchObject({ verified: true, members: { [identity.principal]: "owner" } });
    const nc = await server.connect();
    const bucket = await new Kvm(jetstream(nc)).open(MembershipBucket.roomLog);
    // What a compromised store could do: drop the newest entry (the removal)...
    const last = (await bucket.get(`${room.id}.2`))!.string();
    await bucket.purge(`${room.id}.2`);
    const rolledBack = await cli(["rooms", "log", room.id, "--verify"]);
    expect(rolledBack.code).not.toBe(ExitCode.ok);
    expect(rolledBack.err).toMatch(/log_rollback/);
    await bucket.put(`${room.id}.2`, last);
    // ...or rewrite who was invited.
    const key = `${room.id}.1`;
    const entry = (await bucket.get(key))!.json<Record<string, unknown>>();
    await bucket.put(key, JSON.stringify({ ...entry, target: identity.principal }));
    await nc.close();
    const bad = await cli(["rooms", "log", room.id, "--verify"]);
    expect(bad.code).not.toBe(ExitCode.ok);
    expect(bad.err).toMatch(/log_bad_entry/);
    expect((await cli(["rooms", "log", room.id])).code).toBe(ExitCode.ok);
  });
});

describe("unibus users log [--verify]", () => {
  it("any user verifies the users log from its root and pins it; another root or a rewritten entry fails with its reason", async () => {
    const member = createIdentity();
    await owner.users.add(member.principal, "reader", "member");
    const ok = await cli(["users", "log", "--verify"]);
    expect(ok.code).toBe(ExitCode.ok);
    expect(ok.out).toMatch(/\bbootstrap\b/);
    const json = JSON.parse((await cli(["users", "log", "--verify", "--json"])).out) as { verified: boolean; headSeq: number; admins: string[]; root: string };
    expect(json).toMatchObject({ verified: true, admins: [identity.principal] });
    expect((await cli(["users", "log", "--verify", "--root", json.root])).code).toBe(ExitCode.ok);
    const wrongRoot = await cli(["users", "log", "--verify", "--root", createIdentity().principal]);
    expect(wrongRoot.code).not.toBe(ExitCode.ok);
    expect(wrongRoot.err).toMatch(/log_root_mismatch/);
    const nc = await server.connect();
    const bucket = await new Kvm(jetstream(nc)).open(MembershipBucket.usersLog);
    // A compromised store rewriting whom the newest add named: refused against the pinned head.
    const key = String(json.headSeq);
    const entry = (await bucket.get(key))!.json<Record<string, unknown>>();
    await bucket.put(key, JSON.stringify({ ...entry, role: "admin" }));
    await nc.close();
    const bad = await cli(["users", "log", "--verify"]);
    expect(bad.code).not.toBe(ExitCode.ok);
    expect(bad.err).toMatch(/log_bad_entry|log_fork/);
    expect((await cli(["users", "log"])).code).toBe(ExitCode.ok);
  });
});
