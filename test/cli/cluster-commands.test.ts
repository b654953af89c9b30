import { chmod, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { createIdentity, randomBytes, toHex, unlockWrappedCuk, writeIdentityFile } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { createReplicaGatewayService } from "@unibus/replica-gateway";
import type { RunningReplicaGateway } from "@unibus/replica-gateway";
import { joinNode, loadNodeIdentity, NodeHomeError, readNodeClusterInfo, readNodeUnlockKey, readWrappedCuk, replicaHandshake } from "@unibus/sdk";
import { eventually, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { ExitCode, runCli } from "@unibus/cli";
import { recordingIo } from "@unibus/cli/test-io";
import type { RecordingIo } from "@unibus/cli/test-io";

const CLUSTER = "cli-cluster";
const PSK = toHex(randomBytes(32));
let server: TestServer;
let dir: string;
let admin: Identity;
let adminPath: string;
const gateways: RunningReplicaGateway[] = [];
const conns: NatsConnection[] = [];
/** Every command's output, to prove no unlock key or ticket is printed beyond where it must be. */
const outputs: string[] = [];

async function startGateway(): Promise<RunningReplicaGateway> {
  const nc = await server.connect();
  conns.push(nc);
  const g = await createReplicaGatewayService(nc, {
    logger: pino({ level: "silent" }),
    clusterName: CLUSTER,
    psk: { current: Uint8Array.from(Buffer.from(PSK, "hex")) },
    resolveRole: async (p) => (p === admin.principal ? "admin" : null),
    peerRetryMs: 200,
    seedWaitMs: 300,
  });
  gateways.push(g);
  return g;
}

async function* linesOf(text: string): AsyncIterable<string> {
  await Promise.resolve();
  yield text;
}

async function cli(argv: string[], opts: { stdin?: string; identity?: string } = {}): Promise<{ code: number; io: RecordingIo }> {
  const io = recordingIo({
    cwd: dir,
    env: { UNIBUS_URL: server.url, UNIBUS_IDENTITY: opts.identity ?? adminPath, UNIBUS_REPLICA_PSK: PSK, UNIBUS_NODE_HOME: join(dir, "node-home") },
    ...(opts.stdin === undefined ? {} : { lines: linesOf(opts.stdin) }),
  });
  const code = await runCli(argv, io);
  outputs.push(io.all());
  return { code, io };
}

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  dir = await mkdtemp(join(tmpdir(), "unibus-cluster-cli-"));
  admin = createIdentity();
  adminPath = join(dir, "admin.key");
  await writeIdentityFile(adminPath, admin);
  await startGateway();
});

afterAll(async () => {
  for (const g of gateways) await g.stop();
  for (const nc of conns) await nc.close().catch(() => undefined);
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("unibus cluster / node", () => {
  let recoverySecret = "";
  const home = (): string => join(dir, "node-home");

  it("cluster init prints the recovery secret once; history --verify checks the genesis", async () => {
    const init = await cli(["cluster", "init", "--name", CLUSTER]);
    expect(init.code, init.io.all()).toBe(ExitCode.ok);
    recoverySecret = init.io.stdout.map((l) => l.trim()).find((l) => l.startsWith("UBRS-")) ?? "";
    expect(recoverySecret).toMatch(/^UBRS-/);
    const history = await cli(["cluster", "history", "--verify"]);
    expect(history.code, history.io.all()).toBe(ExitCode.ok);
    expect(history.io.stdout.join("\n")).toMatch(/history verified: 1 entries/);
    expect((await cli(["cluster", "init", "--name", CLUSTER])).io.stderr.join("\n")).toMatch(/conflict: .*already initialised/);
  });

  it("ticket → register → approve → commit → join, with the home's secret files 0600", async () => {
    const ticket = await cli(["node", "ticket", "node-1", "--json"]);
    expect(ticket.code, ticket.io.all()).toBe(ExitCode.ok);
    const t = (JSON.parse(ticket.io.stdout.join("\n")) as { ticket: string }).ticket;
    const reg = await cli(["node", "register", "node-1", "--cluster", CLUSTER], { stdin: t });
    expect(reg.code, reg.io.all()).toBe(ExitCode.ok);
    expect(reg.io.stdout.join("\n")).toMatch(/node-1 registered as NEW/);
    expect((await cli(["node", "join"])).io.stderr.join("\n")).toMatch(/forbidden: .*not UP/);
    expect((await cli(["node", "approve", "node-1"])).code).toBe(ExitCode.ok);
    const commit = await cli(["node", "commit"]);
    expect(commit.code, commit.io.all()).toBe(ExitCode.ok);
    const join1 = await cli(["node", "join"]);
    expect(join1.code, join1.io.all()).toBe(ExitCode.ok);
    expect(join1.io.stdout.join("\n")).toMatch(/node-1 joined/);
    for (const f of ["node.key", "nuk", "cuk.wrapped"]) expect((await stat(join(home(), f))).mode & 0o777).toBe(0o600);
    const list = await cli(["node", "list", "--json"]);
    expect(JSON.parse(list.io.stdout.join("\n"))).toMatchObject({ nodes: [{ nodeId: "node-1", state: "UP" }] });
    const history = await cli(["cluster", "history", "--verify", "--json"]);
    expect((JSON.parse(history.io.stdout.join("\n")) as { entries: unknown[] }).entries).toHaveLength(4);
  });

  it("cold start: the wrapped CUK in the home opens with the recovery secret alone, to the CUK join returns", async () => {
    const identity = await loadNodeIdentity(home());
    const info = await readNodeClusterInfo(home());
    const nc = await server.connect({ inboxPrefix: `_INBOX.${identity.principal}` });
    conns.push(nc);
    const hs = await replicaHandshake(nc, { clusterName: CLUSTER, replicaId: "node-1", psk: Uint8Array.from(Buffer.from(PSK, "hex")), identity: identity.signingKey });
    const cuk = await joinNode(nc, { identity, nodeId: info.nodeId, sessionId: hs.session.sessionId });
    const opened = unlockWrappedCuk(recoverySecret, await readWrappedCuk(home()), "node-1", identity.principal);
    expect(toHex(opened)).toBe(toHex(cuk));
    expect((await readNodeUnlockKey(home())).byteLength).toBe(32);
    await chmod(join(home(), "nuk"), 0o644);
    await expect(readNodeUnlockKey(home())).rejects.toBeInstanceOf(NodeHomeError);
    await chmod(join(home(), "nuk"), 0o600);
  });

  it("after every gateway restarts, cluster recover reads the secret from a 0600 file and join works again", async () => {
    for (const g of gateways.splice(0)) await g.stop();
    await startGateway();
    expect((await cli(["node", "join"])).io.stderr.join("\n")).toMatch(/unavailable: .*cluster seed/);
    const file = join(dir, "secret");
    await writeFile(file, `${recoverySecret}\n`, { mode: 0o644 });
    await chmod(file, 0o644);
    expect((await cli(["cluster", "recover", "--secret-file", file])).io.stderr.join("\n")).toMatch(/must be 0600/);
    await chmod(file, 0o600);
    const typo = await cli(["cluster", "recover"], { stdin: recoverySecret.slice(0, -2) + (recoverySecret.endsWith("A") ? "BB" : "AA") });
    expect(typo.code).toBe(ExitCode.failure);
    expect(typo.io.stderr.join("\n")).toMatch(/checksum|length/);
    const rec = await cli(["cluster", "recover", "--secret-file", file]);
    expect(rec.code, rec.io.all()).toBe(ExitCode.ok);
    await eventually(() => gateways.every((g) => g.core.keys !== undefined), (ok) => ok, { timeoutMs: 5_000 });
    const again = await cli(["node", "join"]);
    expect(again.code, again.io.all()).toBe(ExitCode.ok);
  });

  it("decommission: the node never joins again; no output ever printed a secret but the recovery secret at init", async () => {
    expect((await cli(["node", "decommission", "node-1"])).code).toBe(ExitCode.ok);
    const j = await cli(["node", "join"]);
    expect(j.code).toBe(ExitCode.failure);
    expect(j.io.stderr.join("\n")).toMatch(/forbidden: .*decommissioned/);
    const history = await cli(["cluster", "history"]);
    expect(history.io.stdout.join("\n")).toContain("node.decommission");
    expect(history.io.all()).not.toContain(recoverySecret);
    // The node unlock key and the CUK never reach any output; the recovery secret only init's.
    const nuk = await readNodeUnlockKey(home());
    const all = outputs.join("\n");
    for (const form of [toHex(nuk), Buffer.from(nuk).toString("base64url"), Buffer.from(nuk).toString("base64")]) expect(all).not.toContain(form);
    expect(outputs.filter((o) => o.includes(recoverySecret))).toHaveLength(1);
  });

  it("cluster gateway-add / gateway-remove change the manifest the history verifies", async () => {
    const extra = createIdentity().principal;
    const add = await cli(["cluster", "gateway-add", extra, "--json"]);
    expect(add.code, add.io.all()).toBe(ExitCode.ok);
    expect((JSON.parse(add.io.stdout.join("\n")) as { gateways: string[] }).gateways).toContain(extra);
    const rm = await cli(["cluster", "gateway-remove", extra]);
    expect(rm.code, rm.io.all()).toBe(ExitCode.ok);
    expect(rm.io.stdout.join("\n")).not.toContain(extra);
    const history = await cli(["cluster", "history", "--verify"]);
    expect(history.io.stdout.join("\n")).toMatch(/gateway\.add[\s\S]*gateway\.remove/);
    expect((await cli(["cluster", "gateway-add", "nope"])).code).toBe(ExitCode.usage);
  });

  it("usage: a bad node id is a usage error; a secret is never taken from argv", async () => {
    expect((await cli(["node", "ticket", "Bad_Id"])).code).toBe(ExitCode.usage);
    expect((await cli(["cluster", "recover", recoverySecret])).code).toBe(ExitCode.usage);
  });
});
