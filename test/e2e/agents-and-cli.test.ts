// The agent-worker example, `unibus check` and `unibus chat`, run against
// the production callout ACLs with the keys service in-process.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ExitCode, runCli } from "@unibus/cli";
import { createIdentity } from "@unibus/crypto";
import { rekeyRoom, waitForRoomAccess } from "@unibus/sdk";
import { startAgentWorker, upperCaseHandler } from "@unibus/sdk/examples/agent-worker";
import { recordingIo } from "@unibus/cli/test-io";
import type { RecordingIo } from "@unibus/cli/test-io";
import { eventually } from "@unibus/testing";
import { cliIdentities, keyedMember, nextMatching, startE2eBus } from "./bus-with-services.js";
import type { CliIdentities, E2eBus } from "./bus-with-services.js";

/** Lines typed into a command, one at a time, as a test drives it. */
class TypedLines implements AsyncIterable<string> {
  readonly #queue: string[] = [];
  #wake: (() => void) | undefined;
  type(line: string): void {
    this.#queue.push(line);
    this.#wake?.();
  }
  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    for (;;) {
      const line = this.#queue.shift();
      if (line !== undefined) {
        yield line;
        continue;
      }
      await new Promise<void>((r) => (this.#wake = r));
    }
  }
}

async function until(what: string, io: RecordingIo, test: () => boolean, ms = 10_000): Promise<void> {
  await eventually(test, (ok) => ok, { timeoutMs: ms, intervalMs: 50 }).catch(() => {
    throw new Error(`timed out waiting for ${what}:\n${io.all()}`);
  });
}

describe("agents and the CLI on a live bus", () => {
  let e2e: E2eBus;
  let ids: CliIdentities;

  beforeAll(async () => {
    e2e = await startE2eBus();
    ids = await cliIdentities(e2e.bus, "unibus-e2e-cli-");
  });
  afterAll(async () => {
    await e2e?.stop();
    await ids?.remove();
  });

  it("the agent worker answers agent.<name>.in requests inside the encrypted room", async () => {
    const owner = await keyedMember(e2e.bus, "agent-owner");
    const agent = await e2e.bus.addMember("echo-agent");
    const { room } = await owner.client.rooms.create("agents", { persist: false, encrypt: true });
    await waitForRoomAccess(owner.client, room.id);
    await owner.client.rooms.invite(room.id, agent.principal);
    // The worker's readyRoom waits for a key epoch; the owner seals one once the agent's key is registered and it waits.
    const stages: string[] = [];
    const starting = startAgentWorker({ client: agent.client, identity: agent.identity, roomId: room.id, name: "echo", handler: upperCaseHandler(), onStage: (s) => stages.push(s) });
    await expect.poll(() => stages.includes("waiting_for_owner_to_seal_epoch"), { timeout: 15_000 }).toBe(true);
    await rekeyRoom(owner.client, owner.identity.signingKey, room.id);
    const worker = await starting;
    const ownerRoom = owner.client.room(room.id, owner.keyring);
    const answers = ownerRoom.subscribe()[Symbol.asyncIterator]();
    await owner.client.nc.flush();
    try {
      await ownerRoom.publish({ to: "agent.echo.in", id: "r1", text: "hello agent" });
      await ownerRoom.publish({ to: "agent.other.in", id: "r2", text: "not for echo" });
      await ownerRoom.publish({ to: "agent.echo.in", id: "r3", text: "again" });
      const isAnswer = (m: { json<T>(): T }): boolean => m.json<{ to?: string }>().to === "agent.echo.out";
      const first = await nextMatching(answers, isAnswer, 5_000);
      const second = await nextMatching(answers, isAnswer, 5_000);
      expect(first?.sender).toBe(agent.principal);
      expect(first?.json()).toEqual({ to: "agent.echo.out", id: "r1", text: "HELLO AGENT", count: 1, replyTo: owner.principal });
      expect(second?.json()).toMatchObject({ id: "r3", text: "AGAIN", count: 2 });
      expect(worker.handled).toBe(2);
    } finally {
      await worker.stop();
      await ownerRoom.close();
    }
  });

  it("`unibus check` sends and receives N messages decrypted through a temporary room, reports latency, and leaves it", async () => {
    const io = recordingIo({ env: await ids.env("admin", e2e.bus.adminIdentity), cwd: ids.dir });
    expect(await runCli(["check", "--messages", "200", "--room-count", "2", "--json"], io), io.all()).toBe(ExitCode.ok);
    const report = JSON.parse(io.stdout.join("\n")) as { ok: boolean; rooms: { roomId: string; sent: number; received: number; lost: number; rejects: number; p50Ms: number; p99Ms: number }[] };
    expect(report.ok).toBe(true);
    expect(report.rooms).toHaveLength(2);
    for (const r of report.rooms) {
      expect(r).toMatchObject({ sent: 200, received: 200, lost: 0, rejects: 0 });
      expect(r.p99Ms).toBeGreaterThanOrEqual(r.p50Ms);
    }
    console.info(`unibus check (test bus): ${JSON.stringify(report.rooms.map(({ received, p50Ms, p99Ms }) => ({ received, p50Ms, p99Ms })))}`);
    // Cleanup: the admin is in none of the temporary rooms afterwards.
    const { rooms } = await e2e.bus.admin.rooms.list();
    expect(rooms.filter(({ room }) => report.rooms.some((r) => r.roomId === room.id))).toEqual([]);

    // An identity the bus does not know fails the check (exit 1), it does not hang.
    const stranger = recordingIo({ env: await ids.env("stranger", createIdentity()), cwd: ids.dir });
    expect(await runCli(["check", "--messages", "5"], stranger)).toBe(ExitCode.failure);
    expect(stranger.stderr.join("\n")).toMatch(/refused/);
  });

  it("two `unibus chat` sessions exchange lines both ways; /quit ends each", async () => {
    const owner = await e2e.bus.addMember("chat-owner");
    const peer = await e2e.bus.addMember("chat-peer");
    const { room } = await owner.client.rooms.create("chat", { persist: false, encrypt: true });
    // Creating a room kicks the creator's connections shortly after the reply; let that pass first.
    await waitForRoomAccess(owner.client, room.id);
    await owner.client.rooms.invite(room.id, peer.principal);
    const peerLines = new TypedLines();
    const ownerLines = new TypedLines();
    const peerIo = recordingIo({ env: await ids.env("peer", peer.identity), cwd: ids.dir, lines: peerLines });
    const ownerIo = recordingIo({ env: await ids.env("owner", owner.identity), cwd: ids.dir, lines: ownerLines });

    // The peer registers its key first, so the owner's first epoch includes it.
    const peerExit = runCli(["chat", room.id], peerIo);
    await until("the peer to join", peerIo, () => peerIo.stderr.some((l) => l.startsWith("joined")));
    expect(peerIo.stderr).toContain("registered your agreement key with the keys service");
    const ownerExit = runCli(["chat", room.id], ownerIo);
    await until("the owner to join", ownerIo, () => ownerIo.stderr.some((l) => l.startsWith("joined")));
    expect(ownerIo.stderr).toContain("the room had no key yet and you own it: started epoch 1");

    // Senders show by handle: members may read their room's members' handles.
    const line = (who: string, text: string): RegExp => new RegExp(`^\\[\\d\\d:\\d\\d:\\d\\d\\] ${who}: ${text}$`);
    ownerLines.type("hello from the owner");
    await until("the owner's line at the peer", peerIo, () => peerIo.stdout.some((l) => line("chat-owner", "hello from the owner").test(l)));
    peerLines.type("hi back from the peer");
    await until("the peer's line at the owner", ownerIo, () => ownerIo.stdout.some((l) => line("chat-peer", "hi back from the peer").test(l)));

    ownerLines.type("/quit");
    peerLines.type("/quit");
    expect(await ownerExit).toBe(ExitCode.ok);
    expect(await peerExit).toBe(ExitCode.ok);
    expect(peerIo.stderr.filter((l) => l.includes("rejected"))).toEqual([]);
  });

  it("`unibus chat` as a non-member fails with exit 1", async () => {
    const outsider = await e2e.bus.addMember("outsider");
    const { room } = await e2e.bus.admin.rooms.create("private", { persist: false, encrypt: true });
    const io = recordingIo({ env: await ids.env("outsider", outsider.identity), cwd: ids.dir, lines: new TypedLines() });
    expect(await runCli(["chat", room.id], io)).toBe(ExitCode.failure);
    expect(io.stderr.join("\n")).toMatch(/forbidden|not a member/);
  });
});

