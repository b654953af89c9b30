import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createInbox, headers as natsHeaders } from "@nats-io/nats-core";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { decodeReply, ErrorCode, ErrorReason, Subjects, UnibusError, replyError } from "@unibus/contracts";
import type { ReplicaTicketReply } from "@unibus/contracts";
import {
  clusterIdFromName,
  createIdentity,
  decodeRecoverySecret,
  encodeRecoverySecret,
  EnvelopeHeader,
  envelopeToHeaders,
  fromHex,
  generateClusterSeed,
  latestPointerBytes,
  nodeAgreementBytes,
  randomBytes,
  sealTo,
  signEnvelope,
  SigningKey,
  toBase64Url,
  toHex,
} from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import {
  ClusterHistoryError,
  commitNode,
  HistoryEntryType,
  fetchClusterHistory,
  initCluster,
  joinNode,
  recoverCluster,
  registerNode,
  replicaHandshake,
  signedRequest,
} from "@unibus/sdk";
import type { ClusterHistoryEntry } from "@unibus/sdk";
import { eventually, rejectionOf, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { createReplicaGatewayService } from "./service.js";
import type { RunningReplicaGateway } from "./service.js";

const CLUSTER = "lifecycle-cluster";
const PSK = randomBytes(32);
const admin = SigningKey.generate();
const gwKeys = [SigningKey.generate(), SigningKey.generate()];
const outsider = SigningKey.generate();

/** Every log line of every gateway in this file, to prove no secret is ever written. */
const logText: string[] = [];
const sink = new Writable({
  write(chunk: Buffer, _enc, done) {
    logText.push(chunk.toString());
    done();
  },
});
const logger = pino({ level: "debug" }, sink);

let server: TestServer;
let adminNc: NatsConnection;
const conns: NatsConnection[] = [];
const running: RunningReplicaGateway[] = [];
/** Secrets seen in this file: none may ever reach a log line. */
const secrets: string[] = [];

async function connect(principal?: string): Promise<NatsConnection> {
  const nc = await server.connect(principal === undefined ? {} : { inboxPrefix: `_INBOX.${principal}` });
  conns.push(nc);
  return nc;
}

async function gateway(identity: SigningKey): Promise<RunningReplicaGateway> {
  const g = await createReplicaGatewayService(await connect(), {
    logger,
    clusterName: CLUSTER,
    acceptorId: `gw-${running.length + 1}`,
    psk: { current: PSK },
    identity,
    resolveRole: async (p) => (p === admin.principal ? "admin" : null),
    seedWaitMs: 500,
    peerRetryMs: 200,
  });
  running.push(g);
  return g;
}

async function stopAll(): Promise<void> {
  for (const g of running.splice(0)) await g.stop();
}

const adminCall = <T>(subject: string, body: unknown): Promise<T> => signedRequest<T>(adminNc, admin, subject, body, 5_000);

async function errorOf(p: Promise<unknown>): Promise<UnibusError> {
  return rejectionOf(p, UnibusError);
}

interface Node {
  id: string;
  identity: Identity;
  nc: NatsConnection;
  sessionId: string;
}

async function node(id: string, identity: Identity = createIdentity()): Promise<Node> {
  const nc = await connect(identity.principal);
  const hs = await replicaHandshake(nc, { clusterName: CLUSTER, replicaId: id, psk: PSK, identity: identity.signingKey });
  return { id, identity, nc, sessionId: hs.session.sessionId };
}

const step = (n: Node) => ({ identity: n.identity, nodeId: n.id, sessionId: n.sessionId });

async function ticket(nodeId: string): Promise<string> {
  const t = await adminCall<ReplicaTicketReply>(Subjects.replicaGateway.ticket, { nodeId });
  secrets.push(t.ticket);
  return t.ticket;
}

let recoverySecret = "";
let clusterAgreementKey = "";

async function registered(id: string): Promise<Node> {
  const n = await node(id);
  const reply = await registerNode(n.nc, { ...step(n), clusterName: CLUSTER, ticket: await ticket(id) });
  clusterAgreementKey = reply.cluster.agreementKey;
  return n;
}

const json = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));

/** The wrapped CUK stored for `nodeId`, null when absent or purged. */
async function storedCuk(nodeId: string): Promise<string | null> {
  const e = await running[0]?.buckets.cuks.get(`w.${nodeId}`);
  return e === null || e === undefined || e.operation !== "PUT" ? null : e.string();
}

async function historyEntries(): Promise<ClusterHistoryEntry[]> {
  return [...(await fetchClusterHistory(adminNc, admin)).entries];
}

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  adminNc = await connect(admin.principal);
  await gateway(gwKeys[0] as SigningKey);
  await gateway(gwKeys[1] as SigningKey);
});

afterAll(async () => {
  await stopAll();
  for (const nc of conns) await nc.close().catch(() => undefined);
  await server?.stop();
});

describe("cluster init and peer recovery", () => {
  it("before init every lifecycle step fails closed with 503 cluster_locked", async () => {
    expect(await errorOf(adminCall(Subjects.replicaGateway.ticket, { nodeId: "node-0" }))).toMatchObject({ code: ErrorCode.Unavailable, reason: "cluster_locked" });
  });

  it("init writes the genesis listing every discovered replica; a second init is 409 cluster_exists", async () => {
    const result = await initCluster(adminNc, admin, { clusterName: CLUSTER });
    recoverySecret = result.recoverySecret;
    const seed = decodeRecoverySecret(recoverySecret);
    secrets.push(recoverySecret, toHex(seed), toBase64Url(seed), Buffer.from(seed).toString("base64"));
    expect(recoverySecret).toMatch(/^UBRS-/);
    expect([...result.gateways].sort()).toEqual(gwKeys.map((k) => k.principal).sort());
    const history = await fetchClusterHistory(adminNc, admin);
    expect(history.length).toBe(1);
    expect(history.genesis).toMatchObject({ clusterName: CLUSTER, gateways: result.gateways });
    expect(await errorOf(initCluster(adminNc, admin, { clusterName: CLUSTER }))).toMatchObject({ code: ErrorCode.Conflict, reason: "cluster_exists" });
  });

  it("the other fresh replica gets the seed from its live peer", async () => {
    await eventually(
      () => running.every((g) => g.core.keys !== undefined),
      (ok) => ok,
      { timeoutMs: 10_000 },
    );
    expect(logText.join("")).toContain("cluster seed handed to a gateway peer");
  });

  it("a replica the manifest does not list never gets the seed, and stays locked", async () => {
    const rogue = await createReplicaGatewayService(await connect(), { logger, clusterName: CLUSTER, identity: outsider, resolveRole: async () => null, seedWaitMs: 300, peerRetryMs: 100 });
    try {
      await eventually(
        () => logText.filter((l) => l.includes(outsider.principal) && l.includes("manifest does not list")).length,
        (n) => n >= 2,
        { timeoutMs: 10_000 },
      );
      expect(rogue.core.keys).toBeUndefined();
      expect(await rogue.core.askPeers()).toBe(false);
    } finally {
      await rogue.stop();
    }
  });

  it("a gateway the admin lists later gets the seed from a peer; once removed, a fresh replica of it never does", async () => {
    const late = SigningKey.generate();
    const start = () => createReplicaGatewayService(conns[0] as NatsConnection, { logger, clusterName: CLUSTER, identity: late, resolveRole: async () => null, seedWaitMs: 300, peerRetryMs: 100 });
    const added = await adminCall<{ gateways: string[] }>(Subjects.replicaGateway.gatewayAdd, { principal: late.principal });
    expect(added.gateways).toContain(late.principal);
    const first = await start();
    try {
      await eventually(() => first.core.keys !== undefined, (ok) => ok, { timeoutMs: 10_000 });
    } finally {
      await first.stop();
    }
    const removed = await adminCall<{ gateways: string[] }>(Subjects.replicaGateway.gatewayRemove, { principal: late.principal });
    expect(removed.gateways).not.toContain(late.principal);
    const second = await start();
    try {
      expect(await second.core.askPeers()).toBe(false);
      expect(second.core.keys).toBeUndefined();
    } finally {
      await second.stop();
    }
    expect(await errorOf(adminCall(Subjects.replicaGateway.gatewayRemove, { principal: late.principal }))).toMatchObject({ code: ErrorCode.NotFound, reason: "unknown_gateway" });
  });

  it("non-admins cannot init, ticket, approve, list or read the history", async () => {
    const member = SigningKey.generate();
    const nc = await connect(member.principal);
    for (const [subject, body] of [
      [Subjects.replicaGateway.ticket, { nodeId: "x" }],
      [Subjects.replicaGateway.approve, { nodeId: "x" }],
      [Subjects.replicaGateway.nodes, {}],
      [Subjects.replicaGateway.history, {}],
      [Subjects.replicaGateway.decommission, { nodeId: "x" }],
    ] as const) {
      expect(await errorOf(signedRequest(nc, member, subject, body, 5_000))).toMatchObject({ code: ErrorCode.Forbidden });
    }
  });
});

describe("node lifecycle", () => {
  it("ticket → register → approve → commit → join returns the node's CUK, twice", async () => {
    const n = await registered("node-1");
    await adminCall(Subjects.replicaGateway.approve, { nodeId: "node-1" });
    const committed = await commitNode(n.nc, { ...step(n), clusterAgreementKey });
    secrets.push(toHex(committed.cuk), toBase64Url(committed.cuk));
    expect(committed.reply.state).toBe("UP");
    const first = await joinNode(n.nc, step(n));
    const second = await joinNode(n.nc, step(n));
    expect(toHex(first)).toBe(toHex(committed.cuk));
    expect(toHex(second)).toBe(toHex(committed.cuk));
    const list = await adminCall<{ nodes: { nodeId: string; state: string }[] }>(Subjects.replicaGateway.nodes, {});
    expect(list.nodes.find((x) => x.nodeId === "node-1")?.state).toBe("UP");
    // The views agree with the history.
    const view = await running[0]?.buckets.nodes.get("n.node-1");
    expect(view?.json()).toMatchObject({ state: "UP", joinKey: n.identity.principal });
    expect((await running[0]?.buckets.nodes.get(`j.${n.identity.principal}`))?.json()).toEqual({ nodeId: "node-1" });
  });

  it("join and commit before approve are 403 not_approved", async () => {
    const n = await registered("node-2");
    expect(await errorOf(joinNode(n.nc, step(n)))).toMatchObject({ code: ErrorCode.Forbidden, reason: "not_approved" });
    expect(await errorOf(commitNode(n.nc, { ...step(n), clusterAgreementKey }))).toMatchObject({ code: ErrorCode.Forbidden, reason: "not_approved" });
    expect(await storedCuk("node-2")).toBeNull();
  });

  it("a join key registers once (409 join_key_exists); a used ticket is 403; approve of a node not NEW is 409", async () => {
    const n = await registered("node-3");
    const same = await node("node-3b", n.identity);
    const again = await errorOf(registerNode(same.nc, { ...step(same), clusterName: CLUSTER, ticket: await ticket("node-3b") }));
    expect(again).toMatchObject({ code: ErrorCode.Conflict, reason: "join_key_exists" });
    const t = await ticket("node-4");
    const other = await node("node-4");
    await registerNode(other.nc, { ...step(other), clusterName: CLUSTER, ticket: t });
    const third = await node("node-4");
    expect(await errorOf(registerNode(third.nc, { ...step(third), clusterName: CLUSTER, ticket: t }))).toMatchObject({ code: ErrorCode.Forbidden, reason: "ticket_invalid" });
    expect(await errorOf(registerNode(third.nc, { ...step(third), clusterName: CLUSTER, ticket: toBase64Url(randomBytes(32)) }))).toMatchObject({ code: ErrorCode.Forbidden, reason: "ticket_invalid" });
    await adminCall(Subjects.replicaGateway.approve, { nodeId: "node-3" });
    expect(await errorOf(adminCall(Subjects.replicaGateway.approve, { nodeId: "node-3" }))).toMatchObject({ code: ErrorCode.Conflict, reason: "state_conflict" });
  });

  it("a request needs a finished handshake session of its own signer", async () => {
    const n = await registered("node-5");
    const stranger = await node("node-6");
    expect(await errorOf(joinNode(stranger.nc, { ...step(stranger), sessionId: n.sessionId }))).toMatchObject({ code: ErrorCode.Forbidden, reason: "session_invalid" });
    expect(await errorOf(joinNode(n.nc, { ...step(n), sessionId: "ab".repeat(16) }))).toMatchObject({ code: ErrorCode.Forbidden, reason: "session_invalid" });
    // A session of this very key, but for another replica id.
    const elsewhere = await node("node-5x", n.identity);
    expect(await errorOf(joinNode(n.nc, { ...step(n), sessionId: elsewhere.sessionId }))).toMatchObject({ code: ErrorCode.Forbidden, reason: "session_invalid" });
  });

  it("a decommissioned node is refused forever: no join, no new registration of its join key, its wrapped CUK purged", async () => {
    const n = await registered("node-7");
    await adminCall(Subjects.replicaGateway.approve, { nodeId: "node-7" });
    const c = await commitNode(n.nc, { ...step(n), clusterAgreementKey });
    secrets.push(toHex(c.cuk));
    expect(await storedCuk("node-7")).not.toBeNull();
    await adminCall(Subjects.replicaGateway.decommission, { nodeId: "node-7" });
    expect(await errorOf(joinNode(n.nc, step(n)))).toMatchObject({ code: ErrorCode.Forbidden, reason: "decommissioned" });
    expect(await storedCuk("node-7")).toBeNull();
    const back = await node("node-7b", n.identity);
    expect(await errorOf(registerNode(back.nc, { ...step(back), clusterName: CLUSTER, ticket: await ticket("node-7b") }))).toMatchObject({ code: ErrorCode.Conflict, reason: "join_key_exists" });
    expect(await errorOf(commitNode(n.nc, { ...step(n), clusterAgreementKey }))).toMatchObject({ code: ErrorCode.Forbidden, reason: "decommissioned" });
    expect(await errorOf(adminCall(Subjects.replicaGateway.ticket, { nodeId: "node-7" }))).toMatchObject({ code: ErrorCode.Conflict, reason: "node_exists" });
  });

  it("two replicas' stores appending one approve at once (certainly different replicas): one entry, the other a 409", async () => {
    await registered("node-14");
    const [a, b] = running as [RunningReplicaGateway, RunningReplicaGateway];
    const keys = a.core.keys;
    if (keys === undefined) throw new Error("locked");
    const ctxFor = () => {
      const body = json({ nodeId: "node-14" });
      return { subject: Subjects.replicaGateway.approve, logger, now: Date.now, payload: new Uint8Array(0), body, envelope: signEnvelope(admin, Subjects.replicaGateway.approve, body) };
    };
    const decide = () => ({ type: HistoryEntryType.approve, effect: { nodeId: "node-14" } });
    const results = await Promise.allSettled([a.core.store.append(keys, ctxFor(), decide), b.core.store.append(keys, ctxFor(), decide)]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const lost = results.find((r) => r.status === "rejected");
    expect(lost?.status === "rejected" ? lost.reason : undefined).toMatchObject({ code: ErrorCode.Conflict, reason: "state_conflict" });
    expect((await historyEntries()).filter((e) => e.type === "node.approve" && e.effect === JSON.stringify({ nodeId: "node-14" }))).toHaveLength(1);
  });

  it("concurrent approves of one node on two gateway replicas make exactly one transition", async () => {
    for (const id of ["node-8", "node-9", "node-10"]) {
      await registered(id);
      const results = await Promise.allSettled([0, 1, 2, 3].map(() => adminCall(Subjects.replicaGateway.approve, { nodeId: id })));
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      for (const r of results) if (r.status === "rejected") expect(r.reason).toMatchObject({ code: ErrorCode.Conflict, reason: "state_conflict" });
      const approvals = (await historyEntries()).filter((e) => e.type === "node.approve" && (JSON.parse(e.effect) as { nodeId: string }).nodeId === id);
      expect(approvals).toHaveLength(1);
    }
  });
});

describe("bad input", () => {
  async function raw(subject: string, data: Uint8Array, opts: { key?: SigningKey; signed?: Uint8Array; envelope?: Record<string, string> } = {}) {
    const key = opts.key ?? admin;
    const h = natsHeaders();
    const env = opts.envelope ?? envelopeToHeaders(signEnvelope(key, subject, opts.signed ?? data));
    for (const [n, v] of Object.entries(env)) h.set(n, v);
    const reply = createInbox(`_INBOX.${h.get(EnvelopeHeader.signer)}`);
    return { msg: await adminNc.request(subject, data, { headers: h, timeout: 5_000, noMux: true, reply }), env };
  }
  function rawError(msg: { data: Uint8Array; headers?: { get(n: string): string } | undefined }): UnibusError {
    const err = replyError(msg);
    if (err === null) throw new Error("expected an error reply");
    return err;
  }
  const session = "ab".repeat(16);
  const cases: Record<string, { subject: string; valid: unknown }> = {
    init: { subject: Subjects.replicaGateway.init, valid: { clusterName: CLUSTER, historyKey: "00".repeat(32), agreementKey: "00".repeat(32), gateways: [admin.principal], sealed: [] } },
    recover: { subject: Subjects.replicaGateway.recover, valid: { sealed: [] } },
    history: { subject: Subjects.replicaGateway.history, valid: {} },
    ticket: { subject: Subjects.replicaGateway.ticket, valid: { nodeId: "bad-input" } },
    approve: { subject: Subjects.replicaGateway.approve, valid: { nodeId: "bad-input" } },
    decommission: { subject: Subjects.replicaGateway.decommission, valid: { nodeId: "bad-input" } },
    nodes: { subject: Subjects.replicaGateway.nodes, valid: {} },
    register: { subject: Subjects.replicaGateway.handshakeRegister, valid: { sessionId: session, nodeId: "bad-input", ticket: "AAAA", agreementKey: "00".repeat(32), agreementSig: "00".repeat(64) } },
    commit: { subject: Subjects.replicaGateway.handshakeCommit, valid: { sessionId: session, nodeId: "bad-input", sealedCuk: "AAAA" } },
    join: { subject: Subjects.replicaGateway.handshakeJoin, valid: { sessionId: session, nodeId: "bad-input" } },
  };
  for (const [name, c] of Object.entries(cases)) {
    it(`${name}: malformed JSON, schema violation, oversize, missing and bad signature are rejected, and nothing is written`, async () => {
      const before = (await historyEntries()).length;
      expect(rawError((await raw(c.subject, new TextEncoder().encode("{nope"))).msg)).toMatchObject({ code: ErrorCode.BadRequest, reason: ErrorReason.MalformedJson });
      expect(rawError((await raw(c.subject, json({ ...(c.valid as object), extra: 1 }))).msg)).toMatchObject({ code: ErrorCode.BadRequest, reason: ErrorReason.SchemaViolation });
      expect(rawError((await raw(c.subject, json({ ...(c.valid as object), pad: "x".repeat(9 * 1024) }))).msg)).toMatchObject({ code: ErrorCode.PayloadTooLarge });
      expect(rawError((await raw(c.subject, json(c.valid), { signed: json({ other: true }) })).msg)).toMatchObject({ code: ErrorCode.Unauthorized, reason: ErrorReason.SignatureInvalid });
      const h = natsHeaders();
      h.set(EnvelopeHeader.signer, admin.principal);
      const unsigned = await adminNc.request(c.subject, json(c.valid), { headers: h, timeout: 5_000, noMux: true, reply: createInbox(`_INBOX.${admin.principal}`) });
      expect(rawError(unsigned)).toMatchObject({ code: ErrorCode.Unauthorized, reason: ErrorReason.SignatureMissing });
      expect((await historyEntries()).length).toBe(before);
    });
  }

  it("info (public): malformed JSON and schema violations are 400; a valid request names the replica", async () => {
    const pub = async (data: Uint8Array) => adminNc.request(Subjects.replicaGateway.info, data, { timeout: 5_000 });
    expect(rawError(await pub(new TextEncoder().encode("{nope")))).toMatchObject({ code: ErrorCode.BadRequest, reason: ErrorReason.MalformedJson });
    expect(rawError(await pub(json({ extra: 1 })))).toMatchObject({ code: ErrorCode.BadRequest, reason: ErrorReason.SchemaViolation });
    const info = decodeReply<{ principal: string; locked: boolean; initialized: boolean }>(await pub(json({})));
    expect(gwKeys.map((k) => k.principal)).toContain(info.principal);
    expect(info).toMatchObject({ locked: false, initialized: true });
  });

  it("a replayed node request (register, commit, join) gets its first outcome and makes no second transition", async () => {
    const n = await node("node-13");
    const t = await ticket("node-13");
    const nodeRaw = async (subject: string, body: unknown, envelope?: Record<string, string>) => {
      const data = json(body);
      const h = natsHeaders();
      const env = envelope ?? envelopeToHeaders(signEnvelope(n.identity.signingKey, subject, data));
      for (const [k, val] of Object.entries(env)) h.set(k, val);
      return { msg: await n.nc.request(subject, data, { headers: h, timeout: 5_000, noMux: true, reply: createInbox(`_INBOX.${n.identity.principal}`) }), env };
    };
    const reg = { sessionId: n.sessionId, nodeId: "node-13", ticket: t, agreementKey: toHex(n.identity.agreementPublicKey), agreementSig: toHex(n.identity.signingKey.sign(nodeAgreementBytes(clusterIdFromName(CLUSTER), "node-13", n.identity.agreementPublicKey))) };
    const first = await nodeRaw(Subjects.replicaGateway.handshakeRegister, reg);
    expect(decodeReply<{ state: string }>(first.msg).state).toBe("NEW");
    const count = (await historyEntries()).length;
    const again = await nodeRaw(Subjects.replicaGateway.handshakeRegister, reg, first.env);
    expect(new TextDecoder().decode(again.msg.data)).toBe(new TextDecoder().decode(first.msg.data));
    await adminCall(Subjects.replicaGateway.approve, { nodeId: "node-13" });
    const commit = { sessionId: n.sessionId, nodeId: "node-13", sealedCuk: toBase64Url(sealTo(fromHex(clusterAgreementKey), randomBytes(32))) };
    const c1 = await nodeRaw(Subjects.replicaGateway.handshakeCommit, commit);
    const c2 = await nodeRaw(Subjects.replicaGateway.handshakeCommit, commit, c1.env);
    expect(new TextDecoder().decode(c2.msg.data)).toBe(new TextDecoder().decode(c1.msg.data));
    const j1 = await nodeRaw(Subjects.replicaGateway.handshakeJoin, { sessionId: n.sessionId, nodeId: "node-13" });
    const j2 = await nodeRaw(Subjects.replicaGateway.handshakeJoin, { sessionId: n.sessionId, nodeId: "node-13" }, j1.env);
    expect(new TextDecoder().decode(j2.msg.data)).toBe(new TextDecoder().decode(j1.msg.data));
    // register, approve, commit: one entry each, whatever was resent.
    expect((await historyEntries()).length).toBe(count + 2);
  });

  it("a replayed approve or ticket request gets the first outcome back and changes nothing a second time", async () => {
    await registered("node-11");
    const first = await raw(Subjects.replicaGateway.approve, json({ nodeId: "node-11" }));
    const before = (await historyEntries()).length;
    const again = await raw(Subjects.replicaGateway.approve, json({ nodeId: "node-11" }), { envelope: first.env });
    expect(new TextDecoder().decode(again.msg.data)).toBe(new TextDecoder().decode(first.msg.data));
    expect((await historyEntries()).length).toBe(before);
    // The same nonce with another body is a replay, not a new request.
    const forged = await raw(Subjects.replicaGateway.approve, json({ nodeId: "node-12" }), { envelope: first.env });
    expect(rawError(forged.msg)).toMatchObject({ code: ErrorCode.Unauthorized });
  });
});

describe("full restart and recovery", () => {
  it("after every replica restarts the lifecycle answers 503 cluster_locked until cluster recover; then join works again", async () => {
    const n = await registered("node-20");
    await adminCall(Subjects.replicaGateway.approve, { nodeId: "node-20" });
    const c = await commitNode(n.nc, { ...step(n), clusterAgreementKey });
    secrets.push(toHex(c.cuk));
    await stopAll();
    await gateway(gwKeys[0] as SigningKey);
    await gateway(gwKeys[1] as SigningKey);
    const fresh = await node("node-20", n.identity);
    expect(await errorOf(joinNode(fresh.nc, step(fresh)))).toMatchObject({ code: ErrorCode.Unavailable, reason: "cluster_locked" });
    expect(await errorOf(adminCall(Subjects.replicaGateway.approve, { nodeId: "node-20" }))).toMatchObject({ code: ErrorCode.Unavailable, reason: "cluster_locked" });
    // Another cluster's secret is refused: its history key is not the genesis key.
    expect(await errorOf(recoverCluster(adminNc, admin, encodeRecoverySecret(generateClusterSeed())))).toMatchObject({ code: ErrorCode.Forbidden, reason: "seed_mismatch" });
    await recoverCluster(adminNc, admin, recoverySecret);
    await eventually(
      () => running.every((g) => g.core.keys !== undefined),
      (ok) => ok,
      { timeoutMs: 10_000 },
    );
    expect(toHex(await joinNode(fresh.nc, step(fresh)))).toBe(toHex(c.cuk));
    expect(toHex(await joinNode(fresh.nc, step(fresh)))).toBe(toHex(c.cuk));
  });
});

describe("tampered history", () => {
  it("the verifier (cluster history --verify) refuses a truncated chain, a bad latest signature and a rollback below a pinned head", async () => {
    const good = await fetchClusterHistory(adminNc, admin);
    const pin = { seq: good.headSeq, hash: toBase64Url(good.headHash) };
    const kv = (running[0] as RunningReplicaGateway).buckets.history;
    const latest = (await kv.get("latest"))?.json<{ seq: number; hash: string; signature: string }>();
    if (latest === undefined) throw new Error("no latest pointer");
    // A pointer signed by another key.
    await kv.put("latest", JSON.stringify({ ...latest, signature: toBase64Url(SigningKey.generate().sign(new Uint8Array(8))) }));
    expect(await rejectionOf(fetchClusterHistory(adminNc, admin), ClusterHistoryError)).toMatchObject({ reason: "history_bad_latest" });
    // The newest entry removed, pointer left: truncated.
    await kv.put("latest", JSON.stringify(latest));
    const last = await kv.get(`e.${latest.seq}`);
    await kv.purge(`e.${latest.seq}`);
    expect(await rejectionOf(fetchClusterHistory(adminNc, admin), ClusterHistoryError)).toMatchObject({ reason: "history_truncated" });
    // A validly signed pointer to the head before (the newest entry dropped): fine alone, a rollback below the pin.
    const keys = (running[0] as RunningReplicaGateway).core.keys;
    const before = good.hashAt(latest.seq - 1);
    if (keys === undefined || before === undefined) throw new Error("no keys");
    const g = good.genesis;
    if (g === undefined) throw new Error("no genesis");
    const sig = keys.historyKey.sign(latestPointerBytes(fromHex(g.clusterId), latest.seq - 1, before));
    await kv.put("latest", JSON.stringify({ seq: latest.seq - 1, hash: toBase64Url(before), signature: toBase64Url(sig) }));
    expect((await fetchClusterHistory(adminNc, admin)).headSeq).toBe(latest.seq - 1);
    expect(await rejectionOf(fetchClusterHistory(adminNc, admin, { pin }), ClusterHistoryError)).toMatchObject({ reason: "history_rollback" });
    // Restored, the chain verifies against the pin again.
    await kv.put(`e.${latest.seq}`, last?.string() ?? "");
    await kv.put("latest", JSON.stringify(latest));
    expect((await fetchClusterHistory(adminNc, admin, { pin })).headSeq).toBe(pin.seq);
  });

  it("no secret (seed, recovery secret, CUK, ticket, PSK) ever reached a log line", () => {
    const all = logText.join("");
    expect(all.length).toBeGreaterThan(1000);
    for (const s of secrets) expect(all).not.toContain(s);
    expect(all).not.toContain(toHex(PSK));
  });
});
