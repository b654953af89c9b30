import { Writable } from "node:stream";
import { inspect } from "node:util";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { schemas, ServiceErrorCodeHeader, Subjects } from "@unibus/contracts";
import {
  acceptorMac,
  clusterIdFromName,
  decodeReplicaChallenge,
  decodeReplicaFinishReply,
  decodeReplicaHello,
  dialerMac,
  encodeReplicaChallenge,
  encodeReplicaFinish,
  encodeReplicaFinishReply,
  encodeReplicaHello,
  fromHex,
  publicKeyFromPrincipal,
  randomBytes,
  REPLICA_CLOCK_SKEW_MS,
  REPLICA_FINISH_MAX_BYTES,
  REPLICA_HANDSHAKE_TTL_MS,
  REPLICA_HELLO_MAX_BYTES,
  ReplicaHandshakeStatus as St,
  replicaKeyId,
  replicaSessionId,
  replicaTranscript,
  signReplicaTranscript,
  SigningKey,
  toHex,
} from "@unibus/crypto";
import { ReplicaDialer, replicaHandshake, ReplicaHandshakeRejectedError } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import type { PskSet } from "./config.js";
import { SESSION_TTL_MS } from "./handlers/handshake.js";
import { createReplicaGatewayService } from "./service.js";
import type { RunningReplicaGateway } from "./service.js";

const CLUSTER = "test-cluster";
const PSK_OLD = randomBytes(32);
const PSK_NEW = randomBytes(48);
const enc = new TextEncoder();

/** Every log line of every gateway in this file, to prove no PSK is ever written. */
const logText: string[] = [];
const sink = new Writable({
  write(chunk: Buffer, _enc, done) {
    logText.push(chunk.toString());
    done();
  },
});
const logger = pino({ level: "debug" }, sink);

let server: TestServer;
let nc: NatsConnection;
let clock = Date.now();
const running: RunningReplicaGateway[] = [];

async function gateway(psk: PskSet | undefined, acceptorId = "gw-1"): Promise<RunningReplicaGateway> {
  const g = await createReplicaGatewayService(nc, {
    logger,
    now: () => clock,
    clusterName: CLUSTER,
    acceptorId,
    ...(psk === undefined ? {} : { psk }),
  });
  running.push(g);
  return g;
}

async function stop(g: RunningReplicaGateway): Promise<void> {
  await g.stop();
  running.splice(running.indexOf(g), 1);
}

/**
 * The messages as the tests write them: byte fields in hex and the identity
 * as its `U…` principal, so a test can replace one field; {@link helloBytes},
 * {@link finishBytes} and the readers below turn them into the wire's bytes.
 */
interface Hello {
  version: number;
  clusterId: string;
  replicaId: string;
  keyId: string;
  nonceD: string;
}
interface Challenge {
  status: number;
  acceptorId?: string;
  nonceA?: string;
  macA?: string;
}
interface Finish {
  clusterId: string;
  replicaId: string;
  acceptorId: string;
  keyId: string;
  nonceD: string;
  nonceA: string;
  identity: string;
  macD: string;
  signature: string;
}
interface FinishReply {
  status: number;
  session?: { sessionId: string; createdAt: number; expiresAt: number };
}

function helloBytes(h: Hello): Uint8Array {
  const out = encodeReplicaHello({ clusterId: fromHex(h.clusterId), keyId: fromHex(h.keyId), nonceD: fromHex(h.nonceD), replicaId: h.replicaId });
  out[0] = h.version;
  return out;
}

function finishBytes(f: Finish): Uint8Array {
  return encodeReplicaFinish({
    clusterId: fromHex(f.clusterId),
    keyId: fromHex(f.keyId),
    nonceD: fromHex(f.nonceD),
    nonceA: fromHex(f.nonceA),
    identity: publicKeyFromPrincipal(f.identity),
    macD: fromHex(f.macD),
    signature: fromHex(f.signature),
    replicaId: f.replicaId,
    acceptorId: f.acceptorId,
  });
}

/** Sends raw bytes; the reply's bytes (a micro error reply fails the test). */
async function send(subject: string, body: Uint8Array): Promise<Uint8Array> {
  const reply = await nc.request(subject, body, { timeout: 5_000 });
  expect(reply.headers?.get(ServiceErrorCodeHeader) ?? "").toBe("");
  return reply.data;
}

function readChallenge(b: Uint8Array): Challenge {
  const c = decodeReplicaChallenge(b);
  if (c === undefined) throw new Error(`not a challenge: ${toHex(b)}`);
  return c.status === St.Ok ? { status: c.status, acceptorId: c.acceptorId, nonceA: toHex(c.nonceA), macA: toHex(c.macA) } : { status: c.status };
}

function readFinishReply(b: Uint8Array): FinishReply {
  const r = decodeReplicaFinishReply(b);
  if (r === undefined) throw new Error(`not a finish reply: ${toHex(b)}`);
  return r.status === St.Ok ? { status: r.status, session: { sessionId: toHex(r.sessionId), createdAt: r.createdAt, expiresAt: r.expiresAt } } : { status: r.status };
}

interface Dial {
  psk?: Uint8Array;
  keyIdPsk?: Uint8Array;
  cluster?: string;
  replicaId?: string;
  nonceD?: Uint8Array;
  version?: number;
}

/** The dialer's hello, built by hand so each field can be made wrong. */
async function hello(d: Dial = {}): Promise<{ hello: Hello; challenge: Challenge; nonceD: Uint8Array }> {
  const nonceD = d.nonceD ?? randomBytes(32);
  const h: Hello = {
    version: d.version ?? 1,
    clusterId: toHex(clusterIdFromName(d.cluster ?? CLUSTER)),
    replicaId: d.replicaId ?? "node-2",
    keyId: toHex(replicaKeyId(d.keyIdPsk ?? d.psk ?? PSK_NEW)),
    nonceD: toHex(nonceD),
  };
  return { hello: h, challenge: readChallenge(await send(Subjects.replicaGateway.handshakeHello, helloBytes(h))), nonceD };
}

interface FinishOpts {
  psk?: Uint8Array;
  identity?: SigningKey;
  signer?: SigningKey;
  /** MAC and sign over swapped ids, send the real ones. */
  swapIds?: boolean;
  /** MAC and sign over this nonce instead of the challenge's (a PSK holder minting one). */
  nonceA?: Uint8Array;
  macD?: string;
  /** Fields replaced after the MAC and signature are made (tampering in transit). */
  fields?: Partial<Finish>;
}

function finishFor(h: { hello: Hello; challenge: Challenge; nonceD: Uint8Array }, o: FinishOpts = {}): Finish {
  const identity = o.identity ?? SigningKey.generate();
  const psk = o.psk ?? PSK_NEW;
  const acceptorId = h.challenge.acceptorId ?? "";
  const nonceA = o.nonceA ?? fromHex(h.challenge.nonceA ?? "");
  const b = {
    clusterId: fromHex(h.hello.clusterId),
    dialerId: o.swapIds === true ? acceptorId : h.hello.replicaId,
    acceptorId: o.swapIds === true ? h.hello.replicaId : acceptorId,
    nonceD: h.nonceD,
    nonceA,
  };
  const macD = dialerMac(psk, b, identity.publicKey);
  const transcript = replicaTranscript(b, acceptorMac(psk, b), macD, identity.publicKey);
  return {
    clusterId: h.hello.clusterId,
    replicaId: h.hello.replicaId,
    acceptorId,
    keyId: h.hello.keyId,
    nonceD: h.hello.nonceD,
    nonceA: toHex(nonceA),
    identity: identity.principal,
    macD: o.macD ?? toHex(macD),
    signature: toHex(signReplicaTranscript(o.signer ?? identity, transcript)),
    ...o.fields,
  };
}

/** A nonce of the acceptor's shape (expiry, then random bytes) that no acceptor issued. */
function mintedNonce(expiresAt: number): Uint8Array {
  const n = randomBytes(32);
  new DataView(n.buffer, n.byteOffset).setBigUint64(0, BigInt(expiresAt));
  return n;
}

const finish = async (f: Finish): Promise<FinishReply> => readFinishReply(await send(Subjects.replicaGateway.handshakeFinish, finishBytes(f)));

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
});

afterAll(async () => {
  for (const g of [...running]) await g.stop();
  await nc?.close();
  await server?.stop();
});

describe("replica handshake, one gateway with the current PSK", () => {
  let gw: RunningReplicaGateway;
  beforeAll(async () => {
    gw = await gateway({ current: PSK_NEW });
  });
  afterAll(async () => {
    await stop(gw);
  });

  it("accepts the current PSK: the session names the identity and is stored for later steps", async () => {
    const identity = SigningKey.generate();
    const result = await replicaHandshake(nc, { clusterName: CLUSTER, replicaId: "node-2", psk: PSK_NEW, identity });
    expect(result.acceptorId).toBe("gw-1");
    expect(result.session).toMatchObject({ replicaId: "node-2", acceptorId: "gw-1", principal: identity.principal, clusterId: toHex(clusterIdFromName(CLUSTER)) });
    const stored = await gw.buckets.sessions.get(result.session.sessionId);
    expect(stored?.json()).toEqual(result.session);
    // The dialer's copy of the record is the gateway's, time for time.
    expect(Date.parse(result.session.expiresAt) - Date.parse(result.session.createdAt)).toBe(SESSION_TTL_MS);
  });

  it("a prepared dialer runs handshake after handshake, each its own session, and shows no key material", async () => {
    const identity = SigningKey.generate();
    const dialer = new ReplicaDialer({ clusterName: CLUSTER, psk: PSK_NEW, identity });
    const a = await dialer.handshake(nc, "node-2");
    const b = await dialer.handshake(nc, "node-5");
    expect(a.session).toMatchObject({ replicaId: "node-2", principal: identity.principal });
    expect(b.session).toMatchObject({ replicaId: "node-5", principal: identity.principal });
    expect(a.session.sessionId).not.toBe(b.session.sessionId);
    expect((await gw.buckets.sessions.get(b.session.sessionId))?.json()).toEqual(b.session);
    const shown = `${JSON.stringify({ dialer })} ${inspect(dialer, { showHidden: true })}`;
    expect(shown).not.toContain(toHex(PSK_NEW));
    expect(shown).toContain(toHex(clusterIdFromName(CLUSTER)));
    // A bad replica id is refused before anything is sent; a wrong PSK is refused by the gateway.
    await expect(dialer.handshake(nc, "Node 2")).rejects.toThrow(/replica id/);
    await expect(new ReplicaDialer({ clusterName: CLUSTER, psk: randomBytes(32), identity }).handshake(nc, "node-2")).rejects.toMatchObject({ stage: "hello", status: St.MacMismatch });
  });

  it("the session id is the transcript's, so both sides agree on it", async () => {
    const h = await hello();
    const identity = SigningKey.generate();
    const f = finishFor(h, { identity });
    const reply = await finish(f);
    expect(reply.status).toBe(St.Ok);
    const b = { clusterId: fromHex(h.hello.clusterId), dialerId: "node-2", acceptorId: "gw-1", nonceD: h.nonceD, nonceA: fromHex(f.nonceA) };
    const transcript = replicaTranscript(b, fromHex(h.challenge.macA ?? ""), fromHex(f.macD), identity.publicKey);
    expect(reply.session?.sessionId).toBe(toHex(replicaSessionId(transcript)));
  });

  it("rejects a wrong PSK: its key id is unknown (MacMismatch), and the client raises", async () => {
    const { challenge } = await hello({ psk: randomBytes(32) });
    expect(challenge).toEqual({ status: St.MacMismatch });
    await expect(replicaHandshake(nc, { clusterName: CLUSTER, replicaId: "node-2", psk: randomBytes(32), identity: SigningKey.generate() })).rejects.toMatchObject({
      stage: "hello",
      status: St.MacMismatch,
    });
  });

  it("rejects a wrong PSK behind a copied (public) key id at the finish", async () => {
    const h = await hello();
    expect(h.challenge.status).toBe(St.Ok);
    expect(await finish(finishFor(h, { psk: randomBytes(32) }))).toEqual({ status: St.MacMismatch });
  });

  it("rejects a wrong cluster id", async () => {
    expect((await hello({ cluster: "other-cluster" })).challenge).toEqual({ status: St.ClusterMismatch });
    await expect(replicaHandshake(nc, { clusterName: "other-cluster", replicaId: "node-2", psk: PSK_NEW, identity: SigningKey.generate() })).rejects.toBeInstanceOf(ReplicaHandshakeRejectedError);
  });

  it("rejects the reflected acceptor MAC as the dialer's", async () => {
    const h = await hello();
    expect(await finish(finishFor(h, { macD: h.challenge.macA ?? "" }))).toEqual({ status: St.MacMismatch });
  });

  it("rejects swapped dialer/acceptor ids (in the MACs or in the finish's fields), and a hello or finish that names the acceptor as dialer", async () => {
    const h = await hello();
    expect(await finish(finishFor(h, { swapIds: true }))).toEqual({ status: St.MacMismatch });
    expect(await finish(finishFor(h, { fields: { replicaId: "gw-1", acceptorId: "node-2" } }))).toEqual({ status: St.MacMismatch });
    expect((await hello({ replicaId: "gw-1" })).challenge).toEqual({ status: St.DirectionalRule });
    expect(await finish(finishFor(h, { fields: { replicaId: "gw-1" } }))).toEqual({ status: St.DirectionalRule });
  });

  it("a replayed hello earns only a fresh challenge: without the PSK it cannot finish, and no second session appears", async () => {
    const nonceD = randomBytes(32);
    const first = await hello({ nonceD });
    const f = finishFor(first);
    expect((await finish(f)).status).toBe(St.Ok);
    const replayed = await hello({ nonceD });
    expect(replayed.challenge.status).toBe(St.Ok);
    expect(replayed.challenge.nonceA).not.toBe(first.challenge.nonceA);
    // The replayer holds no PSK: its finish fails the MAC, however it binds the fresh challenge.
    expect(await finish(finishFor(replayed, { psk: randomBytes(32) }))).toEqual({ status: St.MacMismatch });
    expect(await finish({ ...f, nonceA: replayed.challenge.nonceA ?? "" })).toEqual({ status: St.MacMismatch });
    // The original finish replayed: its session exists, the create loses.
    expect(await finish(f)).toEqual({ status: St.Expired });
  });

  it("rejects a replayed finish, and of two concurrent finishes exactly one wins", async () => {
    const h = await hello();
    const f = finishFor(h);
    expect((await finish(f)).status).toBe(St.Ok);
    expect(await finish(f)).toEqual({ status: St.Expired });
    const h2 = await hello();
    const f2 = finishFor(h2);
    const statuses = (await Promise.all([finish(f2), finish(f2), finish(f2)])).map((r) => r.status).sort();
    expect(statuses).toEqual([St.Ok, St.Expired, St.Expired]);
  });

  it("rejects a finish more than 10 s after its challenge", async () => {
    const h = await hello();
    clock += 10_001;
    try {
      expect(await finish(finishFor(h))).toEqual({ status: St.Expired });
    } finally {
      clock -= 10_001;
    }
  });

  it("rejects a finish for a challenge nonce no acceptor issued", async () => {
    const h = await hello();
    // Random bytes: an expiry centuries away, beyond any acceptor's 10 s.
    expect(await finish({ ...finishFor(h), nonceA: toHex(randomBytes(32)) })).toEqual({ status: St.Expired });
    // A live-looking expiry without the PSK: the MAC does not cover it.
    expect(await finish({ ...finishFor(h), nonceA: toHex(mintedNonce(clock + 5_000)) })).toEqual({ status: St.MacMismatch });
  });

  it("rejects a forged expiry: moving the challenge's expiry breaks the MAC", async () => {
    const h = await hello();
    const nonceA = fromHex(h.challenge.nonceA ?? "");
    const view = new DataView(nonceA.buffer, nonceA.byteOffset);
    expect(Number(view.getBigUint64(0))).toBe(clock + 10_000);
    view.setBigUint64(0, BigInt(clock + 12_000));
    expect(await finish(finishFor(h, { fields: { nonceA: toHex(nonceA) } }))).toEqual({ status: St.MacMismatch });
  });

  it("rejects a challenge nonce minted by a PSK holder with a life longer than any acceptor gives", async () => {
    const h = await hello();
    // Correct MACs and signature over the minted nonce: only the lifetime bound refuses it.
    expect(await finish(finishFor(h, { nonceA: mintedNonce(clock + 10_000 + 5_001) }))).toEqual({ status: St.Expired });
    expect(await finish(finishFor(h, { nonceA: mintedNonce(clock - 1) }))).toEqual({ status: St.Expired });
    // Within the bound the same kind of finish is accepted: the bound, not something else, refused the two above.
    expect((await finish(finishFor(h, { nonceA: mintedNonce(clock + 10_000 + 5_000) }))).status).toBe(St.Ok);
  });

  it("rejects a finish for another cluster id, and one whose key id names no PSK", async () => {
    const h = await hello();
    expect(await finish(finishFor(h, { fields: { clusterId: toHex(clusterIdFromName("other-cluster")) } }))).toEqual({ status: St.ClusterMismatch });
    expect(await finish(finishFor(h, { fields: { keyId: toHex(replicaKeyId(randomBytes(32))) } }))).toEqual({ status: St.MacMismatch });
  });

  it("the session record outlives the longest challenge, so a replay meets either the record or an expired nonce", () => {
    expect(SESSION_TTL_MS).toBeGreaterThan(REPLICA_HANDSHAKE_TTL_MS + REPLICA_CLOCK_SKEW_MS);
  });

  it("rejects an identity that did not sign the transcript, and a finish re-bound to another identity", async () => {
    const h = await hello();
    expect(await finish(finishFor(h, { signer: SigningKey.generate() }))).toEqual({ status: St.AuthRequired });
    // Another key signs, but the MAC was made for the first identity: the PSK proof does not transfer.
    const h2 = await hello();
    const made = finishFor(h2);
    const other = SigningKey.generate();
    expect(await finish({ ...made, identity: other.principal })).toEqual({ status: St.MacMismatch });
  });

  it("answers an unknown protocol version with UnknownCommand", async () => {
    expect((await hello({ version: 2 })).challenge).toEqual({ status: St.UnknownCommand });
  });

  it("answers bytes that are not exactly a hello or a finish with Malformed, without an envelope, and logs who was refused", async () => {
    const h = await hello();
    const good = { hello: helloBytes(h.hello), finish: finishBytes(finishFor(h)) };
    const status = async (subject: string, b: Uint8Array): Promise<number> => readChallenge(await send(subject, b)).status;
    for (const [subject, bytes] of [
      [Subjects.replicaGateway.handshakeHello, good.hello],
      [Subjects.replicaGateway.handshakeFinish, good.finish],
    ] as const) {
      // Empty, truncated (in the fixed part, in the id), one trailing byte, another message's bytes.
      expect(await status(subject, new Uint8Array(0))).toBe(St.Malformed);
      expect(await status(subject, bytes.subarray(0, 30))).toBe(St.Malformed);
      expect(await status(subject, bytes.subarray(0, bytes.byteLength - 1))).toBe(St.Malformed);
      expect(await status(subject, Uint8Array.of(...bytes, 0))).toBe(St.Malformed);
      expect(await status(subject, subject === Subjects.replicaGateway.handshakeHello ? good.finish : good.hello)).toBe(St.Malformed);
      // Another version's message: UnknownCommand, whatever follows.
      expect(await status(subject, Uint8Array.of(2, ...bytes.subarray(1)))).toBe(St.UnknownCommand);
      expect(await status(subject, Uint8Array.of(0))).toBe(St.UnknownCommand);
    }
    // The id rules as the JSON schema had them: 1–63 bytes of [a-z0-9._-], first alphanumeric.
    const withId = (id: Uint8Array): Uint8Array => Uint8Array.of(...good.hello.subarray(0, 57), id.byteLength, ...id);
    expect(await status(Subjects.replicaGateway.handshakeHello, withId(enc.encode("node-2")))).toBe(St.Ok);
    for (const id of ["", "Node-2", "-node", "node 2", "nöde", "a".repeat(64)]) {
      expect(await status(Subjects.replicaGateway.handshakeHello, withId(enc.encode(id))), id).toBe(St.Malformed);
    }
    // A length byte that runs past the end.
    const long = withId(enc.encode("node-2"));
    long[57] = 7;
    expect(await status(Subjects.replicaGateway.handshakeHello, long)).toBe(St.Malformed);
    // Oversize: refused unread, counted as 413 in the endpoint's stats.
    expect(await status(Subjects.replicaGateway.handshakeHello, new Uint8Array(REPLICA_HELLO_MAX_BYTES + 1).fill(1))).toBe(St.Malformed);
    expect(await status(Subjects.replicaGateway.handshakeFinish, new Uint8Array(REPLICA_FINISH_MAX_BYTES + 1).fill(1))).toBe(St.Malformed);
    expect(await status(Subjects.replicaGateway.handshakeFinish, new Uint8Array(5000).fill(1))).toBe(St.Malformed);
    // The good finish still works after all that: nothing was stored for the refused ones.
    expect(readFinishReply(await send(Subjects.replicaGateway.handshakeFinish, good.finish)).status).toBe(St.Ok);
    const stats = await gw.service.stats();
    const finishStats = stats.endpoints?.find((e) => e.name === "handshake-finish");
    expect(finishStats?.num_errors).toBeGreaterThan(0);
    expect(logText.join("")).toContain("replica hello rejected");
  });

  it("the hello and finish are binary endpoints: no JSON schema exists for them, and a JSON body is another version", async () => {
    expect(Object.keys(schemas).filter((id) => id.startsWith("replica.handshake.hello") || id.startsWith("replica.handshake.finish"))).toEqual([]);
    const json = enc.encode(JSON.stringify({ version: 1, clusterId: "00", replicaId: "node-2", keyId: "00", nonceD: "00" }));
    // '{' is not version 1.
    expect(readChallenge(await send(Subjects.replicaGateway.handshakeHello, json)).status).toBe(St.UnknownCommand);
  });

  it("drops a hello or finish whose reply subject is not an inbox, unanswered (the gateway publishes only to inboxes)", async () => {
    const before = gw.droppedRequests();
    const h = await hello();
    nc.publish(Subjects.replicaGateway.handshakeHello, helloBytes(h.hello), { reply: "unibus.v1.replica.handshake.finish" });
    nc.publish(Subjects.replicaGateway.handshakeFinish, finishBytes(finishFor(h)), { reply: "$JS.API.STREAM.DELETE.KV_replica_sessions" });
    await nc.flush();
    await vi.waitFor(() => expect(gw.droppedRequests()).toBe(before + 2));
  });
});

describe("across gateway replicas (no handshake state; the session create is shared in JetStream KV)", () => {
  it("a finish sent at once to two running replicas on one bus: exactly one session", async () => {
    const a = await gateway({ current: PSK_NEW }, "gw-a");
    const b = await gateway({ current: PSK_NEW }, "gw-b");
    try {
      const h = await hello();
      const f = finishFor(h);
      const replies = await Promise.all(Array.from({ length: 8 }, () => finish(f)));
      expect(replies.map((r) => r.status).sort()).toEqual([St.Ok, ...Array<number>(7).fill(St.Expired)]);
      // Later copies are refused too, whichever replica the queue group picks.
      expect(await finish(f)).toEqual({ status: St.Expired });
    } finally {
      await stop(a);
      await stop(b);
    }
  });

  it("a finish may reach another replica, and a replayed hello or finish is rejected there too", async () => {
    const a = await gateway({ current: PSK_NEW }, "gw-a");
    const h = await hello();
    expect(h.challenge).toMatchObject({ status: St.Ok, acceptorId: "gw-a" });
    const f = finishFor(h);
    const h2 = await hello();
    expect(h2.challenge.status).toBe(St.Ok);
    await stop(a);
    const b = await gateway({ current: PSK_NEW }, "gw-b");
    try {
      // The state of gw-a's challenge finishes on gw-b; the MACs name gw-a.
      const done = await finish(finishFor(h2));
      expect(done.status).toBe(St.Ok);
      expect((await b.buckets.sessions.get(done.session?.sessionId ?? ""))?.json()).toMatchObject({ acceptorId: "gw-a" });
      expect((await finish(f)).status).toBe(St.Ok);
      expect(await finish(f)).toEqual({ status: St.Expired });
      // gw-a's hello replayed at gw-b: a fresh challenge from gw-b, which the replayer cannot finish.
      const again = await hello({ nonceD: h.nonceD });
      expect(again.challenge).toMatchObject({ status: St.Ok, acceptorId: "gw-b" });
      expect(await finish(finishFor(again, { psk: randomBytes(32) }))).toEqual({ status: St.MacMismatch });
    } finally {
      await stop(b);
    }
  });
});

describe("PSK rotation", () => {
  it("accepts the previous PSK during a rotation, and the current one", async () => {
    const gw = await gateway({ current: PSK_NEW, previous: PSK_OLD });
    try {
      for (const psk of [PSK_OLD, PSK_NEW]) {
        const r = await replicaHandshake(nc, { clusterName: CLUSTER, replicaId: "node-3", psk, identity: SigningKey.generate() });
        expect(r.session.replicaId).toBe("node-3");
      }
    } finally {
      await stop(gw);
    }
  });

  it("rejects the old PSK once the rotation finished, even for a handshake begun during it", async () => {
    const during = await gateway({ current: PSK_NEW, previous: PSK_OLD });
    const h = await hello({ psk: PSK_OLD });
    expect(h.challenge.status).toBe(St.Ok);
    await stop(during);
    const after = await gateway({ current: PSK_NEW });
    try {
      expect(await finish(finishFor(h, { psk: PSK_OLD }))).toEqual({ status: St.MacMismatch });
      expect((await hello({ psk: PSK_OLD })).challenge).toEqual({ status: St.MacMismatch });
      await expect(replicaHandshake(nc, { clusterName: CLUSTER, replicaId: "node-3", psk: PSK_OLD, identity: SigningKey.generate() })).rejects.toMatchObject({ status: St.MacMismatch });
    } finally {
      await stop(after);
    }
  });
});

describe("without a PSK (single-node default)", () => {
  it("starts, and answers every hello and finish with AuthRequired (fail closed)", async () => {
    const gw = await gateway(undefined);
    try {
      expect((await hello()).challenge).toEqual({ status: St.AuthRequired });
      const fake: Finish = {
        clusterId: toHex(clusterIdFromName(CLUSTER)),
        replicaId: "node-2",
        acceptorId: "gw-1",
        keyId: toHex(replicaKeyId(PSK_NEW)),
        nonceD: toHex(randomBytes(32)),
        nonceA: toHex(mintedNonce(clock + 5_000)),
        identity: SigningKey.generate().principal,
        macD: toHex(randomBytes(32)),
        signature: toHex(randomBytes(64)),
      };
      expect(await finish(fake)).toEqual({ status: St.AuthRequired });
    } finally {
      await stop(gw);
    }
  });
});

describe("the dialer against an acceptor that does not hold the PSK or answers badly", () => {
  /** A fake acceptor on both handshake subjects: answers each hello and finish with what `answer` gives. */
  async function withFake(answer: (stage: "hello" | "finish", data: Uint8Array) => Uint8Array | "503", run: () => Promise<void>): Promise<void> {
    const subs = (["hello", "finish"] as const).map((stage) =>
      nc.subscribe(stage === "hello" ? Subjects.replicaGateway.handshakeHello : Subjects.replicaGateway.handshakeFinish, {
        callback: (_err, msg) => {
          const a = answer(stage, msg.data);
          if (a === "503") {
            const headers = natsHeaders();
            headers.set(ServiceErrorCodeHeader, "503");
            headers.set("Nats-Service-Error", "service unavailable");
            msg.respond(new Uint8Array(0), { headers });
          } else msg.respond(a);
        },
      }),
    );
    await nc.flush();
    try {
      await run();
    } finally {
      for (const sub of subs) sub.unsubscribe();
    }
  }
  const dial = () => replicaHandshake(nc, { clusterName: CLUSTER, replicaId: "node-2", psk: PSK_NEW, identity: SigningKey.generate() });
  const goodChallenge = (hello: Uint8Array, psk = PSK_NEW): Uint8Array => {
    const h = decodeReplicaHello(hello);
    if (typeof h === "number") throw new Error("bad hello");
    const nonceA = mintedNonce(Date.now() + 10_000);
    const macA = acceptorMac(psk, { clusterId: h.clusterId, dialerId: h.replicaId, acceptorId: "gw-fake", nonceD: h.nonceD, nonceA });
    return encodeReplicaChallenge({ nonceA, macA, acceptorId: "gw-fake" });
  };

  it("refuses a challenge whose MAC is not the PSK's, before sending its finish", async () => {
    let finishes = 0;
    await withFake(
      (stage, data) => {
        if (stage === "finish") finishes++;
        return stage === "hello" ? goodChallenge(data, randomBytes(32)) : Uint8Array.of(1, 0);
      },
      async () => {
        await expect(dial()).rejects.toThrow(/acceptor did not prove the PSK/);
      },
    );
    expect(finishes).toBe(0);
  });

  it("refuses a malformed challenge or finish reply, a session id that is not the transcript's, and raises a coded error for a 503", async () => {
    await withFake(
      () => Uint8Array.of(1, 0, 1, 2),
      async () => {
        await expect(dial()).rejects.toThrow(/challenge is malformed/);
      },
    );
    await withFake(
      (stage, data) => (stage === "hello" ? goodChallenge(data) : Uint8Array.of(1, 0, 0)),
      async () => {
        await expect(dial()).rejects.toThrow(/finish reply is malformed/);
      },
    );
    await withFake(
      (stage, data) => (stage === "hello" ? goodChallenge(data) : encodeReplicaFinishReply({ sessionId: randomBytes(16), createdAt: Date.now(), expiresAt: Date.now() + 1 })),
      async () => {
        await expect(dial()).rejects.toThrow(/session does not match this handshake/);
      },
    );
    await withFake(
      (stage, data) => (stage === "hello" ? goodChallenge(data) : "503"),
      async () => {
        await expect(dial()).rejects.toMatchObject({ code: 503 });
      },
    );
  });
});

describe("secrets", () => {
  it("no PSK, in hex, base64 or base64url, appears in any log line of this file", () => {
    const all = logText.join("");
    expect(all).toContain("replica handshake accepted");
    expect(all).toContain("replica finish rejected");
    for (const psk of [PSK_OLD, PSK_NEW]) {
      for (const form of [toHex(psk), Buffer.from(psk).toString("base64"), Buffer.from(psk).toString("base64url")]) {
        expect(all).not.toContain(form);
      }
    }
  });
});
