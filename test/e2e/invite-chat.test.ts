// The README's two-user order, each command a separate `unibus` process
// against the production callout ACLs: alice creates a room, invites bob,
// both run `unibus chat`. Bob registers his agreement key only when his
// chat starts, after alice's chat sealed the room's first epoch, so he must
// get a key from her online client rather than see rejections. CLI start-up
// (tsx) dominates the run time, hence the longer test timeout.
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode } from "@unibus/contracts";
import { loadIdentityFile, writeIdentityFile } from "@unibus/crypto";
import { spawnWatched } from "@unibus/testing";
import type { WatchedProcess } from "@unibus/testing";
import { startE2eBus } from "./bus-with-services.js";
import type { E2eBus } from "./bus-with-services.js";

const BIN = fileURLToPath(new URL("../../libs/cli/bin/unibus.mjs", import.meta.url));
const run = promisify(execFile);

/** A long-running CLI process whose output lines are awaited, never slept on. */
function spawnCli(env: NodeJS.ProcessEnv, args: string[]): WatchedProcess {
  return spawnWatched(process.execPath, [BIN, ...args], { env, stdin: "pipe", label: `unibus ${args.join(" ")}` });
}

/** Runs one CLI command to completion; throws with its output on a non-zero exit. */
async function cli(env: NodeJS.ProcessEnv, ...args: string[]): Promise<string> {
  try {
    return (await run(process.execPath, [BIN, ...args], { env, timeout: 30_000 })).stdout;
  } catch (err) {
    const e = err as { code: number | null; stdout: string; stderr: string };
    throw new Error(`unibus ${args.join(" ")} exited ${e.code}:\n${e.stdout}\n${e.stderr}`);
  }
}

describe("README order for two users, every step a separate unibus process", () => {
  let e2e: E2eBus;
  let dir: string;
  const running: WatchedProcess[] = [];

  beforeAll(async () => {
    e2e = await startE2eBus();
    dir = await mkdtemp(join(tmpdir(), "unibus-invite-chat-"));
  });

  afterAll(async () => {
    for (const p of running) if (p.child.exitCode === null) p.child.kill("SIGTERM");
    await Promise.allSettled(running.map((p) => p.exited));
    await e2e?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("alice creates a room and invites bob; both chat; bob gets a key within 1 s and lines cross both ways, by handle", async () => {
    const base = { ...process.env, UNIBUS_URL: e2e.bus.url };
    const adminId = join(dir, "admin.id");
    await writeIdentityFile(adminId, e2e.bus.adminIdentity);
    const as = (who: string): NodeJS.ProcessEnv => ({ ...base, UNIBUS_IDENTITY: join(dir, `${who}.id`) });
    const admin = { ...base, UNIBUS_IDENTITY: adminId };

    // npx unibus identity create --out alice.id / bob.id; the admin allowlists both.
    const principal = async (who: string): Promise<string> => /created identity (U[A-Z2-7]{55})/.exec(await cli(base, "identity", "create", "--out", join(dir, `${who}.id`)))![1]!;
    const alice = await principal("alice");
    const bob = await principal("bob");
    await cli(admin, "users", "add", alice, "--handle", "alice");
    await cli(admin, "users", "add", bob, "--handle", "bob");

    // npx unibus rooms create ops --persist; npx unibus rooms invite <roomId> <bob>
    const { room } = JSON.parse(await cli(as("alice"), "rooms", "create", "ops", "--persist", "--json")) as { room: { id: string } };
    await cli(as("alice"), "rooms", "invite", room.id, bob);

    // Both run `unibus chat <roomId>`: alice first, so her epoch 1 has no share for bob.
    const aliceChat = spawnCli(as("alice"), ["chat", room.id]);
    running.push(aliceChat);
    await aliceChat.waitFor("stderr", /^joined .* as alice \(owner\)/m);
    expect(aliceChat.stderr()).toMatch(/started epoch 1/);

    const bobChat = spawnCli(as("bob"), ["chat", room.id]);
    running.push(bobChat);
    const waiting = await bobChat.waitFor("stderr", /^waiting for a room key from an online member$/m);
    await bobChat.waitFor("stderr", /^joined .* as bob \(member\)/m);
    const gotKey = await bobChat.waitFor("stderr", /^got the room key \(epoch 2\); you can talk now$/m);
    const keyMs = gotKey - waiting;
    console.info(`bob: "waiting for a room key" → key held: ${keyMs.toFixed(0)} ms (separate processes, shared machine)`);
    expect(keyMs).toBeLessThan(1_000);
    await aliceChat.waitFor("stderr", /^room rekeyed to epoch 2$/m);

    const t0 = performance.now();
    bobChat.type("hello from bob");
    const atAlice = await aliceChat.waitFor("stdout", /^\[\d\d:\d\d:\d\d\] bob: hello from bob$/m, 5_000);
    aliceChat.type("hi bob");
    const atBob = await bobChat.waitFor("stdout", /^\[\d\d:\d\d:\d\d\] alice: hi bob$/m, 5_000);
    console.info(`line bob → alice ${(atAlice - t0).toFixed(0)} ms, alice → bob ${(atBob - atAlice).toFixed(0)} ms`);

    aliceChat.type("/quit");
    bobChat.type("/quit");
    expect(await aliceChat.exited).toBe(0);
    expect(await bobChat.exited).toBe(0);
    // Never a bare rejection or a failed send, and principals never stand in for names.
    for (const p of [aliceChat, bobChat]) {
      expect(p.stderr()).not.toMatch(/rejected frame|no room key held|not sent/);
      expect(p.stdout()).not.toMatch(/U[A-Z2-7]{7}…/);
    }
    // Handles: a member reads those of its own room's members; anyone else gets nothing.
    const bobClient = await e2e.bus.connectAs(await loadIdentityFile(join(dir, "bob.id")));
    const outsider = await e2e.bus.addMember("outsider");
    try {
      const { members } = await bobClient.rooms.get(room.id, { withHandles: true });
      // Member pages come in change order; the order is not part of the contract.
      expect(members.map((m) => [m.principal, m.handle]).sort((x, y) => (x[0]! < y[0]! ? -1 : 1))).toEqual([[alice, "alice"], [bob, "bob"]].sort((x, y) => (x[0]! < y[0]! ? -1 : 1)));
      expect((await bobClient.rooms.get(room.id)).members.every((m) => m.handle === undefined)).toBe(true);
      const denied = await outsider.client.rooms.get(room.id, { withHandles: true }).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(denied).toMatchObject({ code: ErrorCode.Forbidden });
    } finally {
      await bobClient.close();
    }
  }, 120_000);
});
