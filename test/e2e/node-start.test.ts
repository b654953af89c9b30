// A fourth machine joins a running three-node cluster the way an operator
// brings one in: ticket → register → approve → commit, then `unibus node
// start` on every boot, which joins through a live node's client port (as an
// unknown principal whose only grant is the handshake), derives the node's
// own store key and starts its nats-server. Real nats-servers, the real
// callout and gateway; every node-side step is a separate `unibus` process.
import { execFile } from "node:child_process";
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Subjects } from "@unibus/contracts";
import type { ReplicaTicketReply } from "@unibus/contracts";
import { signedRequest } from "@unibus/sdk";
import type { TestBus } from "@unibus/testbus";
import { eventually, freeLoopbackPort, spawnWatched } from "@unibus/testing";
import type { WatchedProcess } from "@unibus/testing";
import { startJoinableCluster } from "./joinable-cluster.js";
import type { JoinableCluster } from "./joinable-cluster.js";

const BIN = fileURLToPath(new URL("../../libs/cli/bin/unibus.mjs", import.meta.url));
const run = promisify(execFile);
const NODE = "node-4";

describe("a fourth node joins a running three-node cluster through the replica gateway", () => {
  let cluster: JoinableCluster;
  let bus: TestBus;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let recoverySecret: string;
  const running: WatchedProcess[] = [];
  const home = (): string => join(dir, "node-home");

  /** One node-side command to completion; its output, or a throw with it. */
  async function cli(args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<string> {
    try {
      const r = await run(process.execPath, [BIN, ...args], { env: { ...env, ...extraEnv }, timeout: 60_000 });
      return r.stdout + r.stderr;
    } catch (err) {
      const e = err as { code: number | null; stdout: string; stderr: string };
      throw new Error(`unibus ${args.join(" ")} exited ${e.code}:\n${e.stdout}\n${e.stderr}`);
    }
  }

  /** `unibus node start` in the foreground, on fresh ports; resolves once it says the node started. */
  async function startNode(extra: string[] = [], extraEnv: NodeJS.ProcessEnv = {}): Promise<{ proc: WatchedProcess; monitor: number }> {
    const monitor = await freeLoopbackPort();
    const args = [
      "node",
      "start",
      "--listen",
      `127.0.0.1:${await freeLoopbackPort()}`,
      "--routes",
      bus.cluster!.routeUrls.join(","),
      "--port",
      String(await freeLoopbackPort()),
      "--monitor-port",
      String(monitor),
      "--bus-config",
      join(dir, "bus.json"),
      ...extra,
    ];
    const proc = spawnWatched(process.execPath, [BIN, ...args], { env: { ...env, ...extraEnv }, label: `unibus ${args.join(" ")}` });
    running.push(proc);
    return { proc, monitor };
  }

  async function stopNode(proc: WatchedProcess): Promise<void> {
    proc.child.kill("SIGTERM");
    await proc.exited;
  }

  beforeAll(async () => {
    cluster = await startJoinableCluster("unibus-node-start-", "node-home");
    ({ bus, dir, env, recoverySecret } = cluster);
  }, 180_000);

  afterAll(async () => {
    for (const p of running) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGTERM");
    await Promise.allSettled(running.map((p) => p.exited));
    await cluster?.stop();
  });

  const admin = <T>(subject: string, body: unknown): Promise<T> => signedRequest<T>(bus.admin.nc, bus.adminIdentity.signingKey, subject, body, 15_000);

  /** The node's own view: it is in the meta group with the three others and sees a leader. */
  const metaOf = async (monitor: number): Promise<{ leader?: string; cluster_size?: number }> => {
    const res = await fetch(`http://127.0.0.1:${monitor}/jsz`).catch(() => undefined);
    if (res === undefined || !res.ok) return {};
    return ((await res.json()) as { meta_cluster?: { leader?: string; cluster_size?: number } }).meta_cluster ?? {};
  };

  it("ticket → register → approve → commit → node start: the node joins the cluster on its own store key, and again after a restart", async () => {
    const { ticket } = await admin<ReplicaTicketReply>(Subjects.replicaGateway.ticket, { nodeId: NODE });
    await writeFile(join(dir, "ticket"), ticket, { mode: 0o600 });
    expect(await cli(["node", "register", NODE, "--cluster", bus.cluster!.name, "--ticket-file", join(dir, "ticket")])).toMatch(/registered as NEW/);
    // Not approved yet: the join is refused and no server is started.
    const early = await startNode();
    expect(await early.proc.exitCode(60_000)).toBe(1);
    expect(early.proc.stderr()).toMatch(/not UP|not_approved/);
    await admin(Subjects.replicaGateway.approve, { nodeId: NODE });
    expect(await cli(["node", "commit"])).toMatch(/is UP/);

    for (const boot of [1, 2]) {
      const { proc, monitor } = await startNode();
      await proc.waitFor("stdout", /node node-4 started/, 60_000);
      const meta = await eventually(() => metaOf(monitor), (m) => (m.leader ?? "") !== "" && (m.cluster_size ?? 0) >= 4, { timeoutMs: 60_000, intervalMs: 250, what: `boot ${boot}: node-4 in the meta group` });
      expect(meta.cluster_size).toBeGreaterThanOrEqual(4);
      // Its store holds the cluster's meta state, written under the node's own key.
      expect(await readdir(join(home(), "data"))).toContain("jetstream");
      await stopNode(proc);
    }
  }, 240_000);

  it("a cold start without any gateway opens the node's store with the recovery secret alone", async () => {
    await writeFile(join(dir, "recovery"), `${recoverySecret}\n`, { mode: 0o600 });
    // Nowhere to join through: the recovery secret is the only way in.
    const { proc, monitor } = await startNode(["--recovery-secret-file", join(dir, "recovery")], { UNIBUS_URL: "nats://127.0.0.1:1" });
    await proc.waitFor("stdout", /node node-4 started/, 60_000);
    await eventually(() => metaOf(monitor), (m) => (m.leader ?? "") !== "", { timeoutMs: 60_000, intervalMs: 250, what: "node-4 back in the meta group" });
    await stopNode(proc);
    // A wrong secret opens nothing and starts nothing.
    await writeFile(join(dir, "wrong"), `UBRS-${"A".repeat(60)}\n`, { mode: 0o600 });
    const wrong = await startNode(["--recovery-secret-file", join(dir, "wrong")], { UNIBUS_URL: "nats://127.0.0.1:1" });
    expect(await wrong.proc.exitCode(60_000)).toBe(1);
  }, 180_000);

  it("a decommissioned node is refused its key and never starts again", async () => {
    await admin(Subjects.replicaGateway.decommission, { nodeId: NODE });
    const { proc } = await startNode();
    expect(await proc.exitCode(60_000)).toBe(1);
    expect(proc.stderr()).toMatch(/decommissioned/);
  }, 120_000);
});
