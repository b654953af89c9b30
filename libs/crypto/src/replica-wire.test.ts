import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { fromHex, toHex } from "./encoding.js";
import { REPLICA_ID_PATTERN, ReplicaHandshakeError, ReplicaHandshakeStatus, replicaIdBytes } from "./replica-handshake.js";
import {
  decodeReplicaChallenge,
  decodeReplicaFinish,
  decodeReplicaFinishReply,
  decodeReplicaHello,
  encodeReplicaChallenge,
  encodeReplicaFinish,
  encodeReplicaFinishReply,
  encodeReplicaHello,
  encodeReplicaStatus,
  REPLICA_FINISH_MAX_BYTES,
  REPLICA_HELLO_MAX_BYTES,
} from "./replica-wire.js";

interface Case {
  name: string;
  dialerId: string;
  acceptorId: string;
  nonceD: string;
  nonceA: string;
  clusterId: string;
  keyId: string;
  identity: string;
  macA: string;
  macD: string;
  signature: string;
  sessionId: string;
  wire: { hello: string; challenge: string; finish: string; finishReply: string; createdAt: number; expiresAt: number };
}
interface Vectors {
  statuses: Record<string, number>;
  cases: Case[];
  rejects: { status: string; bytes: string }[];
  malformed: { what: string; message: "hello" | "finish"; bytes: string; status: string }[];
}

const v = JSON.parse(readFileSync(new URL("../../../contracts/vectors/replica-handshake.json", import.meta.url), "utf8")) as Vectors;

describe("replica handshake binary layout (contracts/vectors/replica-handshake.json)", () => {
  it("the statuses are the spec's, Malformed included", () => {
    expect(v.statuses).toEqual(ReplicaHandshakeStatus);
  });

  for (const c of v.cases) {
    it(`${c.name}: each message encodes to the vector's bytes and decodes back to its fields`, () => {
      const hello = { clusterId: fromHex(c.clusterId), keyId: fromHex(c.keyId), nonceD: fromHex(c.nonceD), replicaId: c.dialerId };
      expect(toHex(encodeReplicaHello(hello))).toBe(c.wire.hello);
      expect(decodeReplicaHello(fromHex(c.wire.hello))).toEqual(hello);

      const challenge = { nonceA: fromHex(c.nonceA), macA: fromHex(c.macA), acceptorId: c.acceptorId };
      expect(toHex(encodeReplicaChallenge(challenge))).toBe(c.wire.challenge);
      expect(decodeReplicaChallenge(fromHex(c.wire.challenge))).toEqual({ status: ReplicaHandshakeStatus.Ok, ...challenge });

      const finish = {
        clusterId: fromHex(c.clusterId),
        keyId: fromHex(c.keyId),
        nonceD: fromHex(c.nonceD),
        nonceA: fromHex(c.nonceA),
        identity: fromHex(c.identity),
        macD: fromHex(c.macD),
        signature: fromHex(c.signature),
        replicaId: c.dialerId,
        acceptorId: c.acceptorId,
      };
      expect(toHex(encodeReplicaFinish(finish))).toBe(c.wire.finish);
      expect(decodeReplicaFinish(fromHex(c.wire.finish))).toEqual(finish);

      const reply = { sessionId: fromHex(c.sessionId), createdAt: c.wire.createdAt, expiresAt: c.wire.expiresAt };
      expect(toHex(encodeReplicaFinishReply(reply))).toBe(c.wire.finishReply);
      expect(decodeReplicaFinishReply(fromHex(c.wire.finishReply))).toEqual({ status: ReplicaHandshakeStatus.Ok, ...reply });
    });
  }

  it("a reject is version ‖ status, as a challenge and as a finish reply", () => {
    for (const r of v.rejects) {
      const status = v.statuses[r.status] as ReplicaHandshakeStatus;
      expect(toHex(encodeReplicaStatus(status))).toBe(r.bytes);
      expect(decodeReplicaChallenge(fromHex(r.bytes))).toEqual({ status });
      expect(decodeReplicaFinishReply(fromHex(r.bytes))).toEqual({ status });
    }
    expect(() => encodeReplicaStatus(ReplicaHandshakeStatus.Ok)).toThrow(ReplicaHandshakeError);
    expect(() => encodeReplicaStatus(9 as ReplicaHandshakeStatus)).toThrow(ReplicaHandshakeError);
  });

  for (const m of v.malformed) {
    it(`refuses ${m.what} with ${m.status}`, () => {
      const decode = m.message === "hello" ? decodeReplicaHello : decodeReplicaFinish;
      expect(decode(fromHex(m.bytes))).toBe(v.statuses[m.status]);
    });
  }

  it("the dialer refuses a challenge or finish reply that is not exactly its layout", () => {
    const c = v.cases[0]!;
    for (const b of [c.wire.challenge, c.wire.finishReply]) {
      const bytes = fromHex(b);
      const decode = b === c.wire.challenge ? decodeReplicaChallenge : decodeReplicaFinishReply;
      expect(decode(bytes)).toBeDefined();
      expect(decode(bytes.subarray(0, bytes.byteLength - 1))).toBeUndefined();
      expect(decode(Uint8Array.of(...bytes, 0))).toBeUndefined();
      expect(decode(Uint8Array.of(2, ...bytes.subarray(1)))).toBeUndefined();
      expect(decode(new Uint8Array(0))).toBeUndefined();
      // An unknown status, and a reject with trailing bytes.
      expect(decode(Uint8Array.of(1, 8))).toBeUndefined();
      expect(decode(Uint8Array.of(1, ReplicaHandshakeStatus.MacMismatch, 0))).toBeUndefined();
    }
    // A finish reply whose time no Date holds.
    const reply = fromHex(c.wire.finishReply);
    reply.fill(0xff, 18, 26);
    expect(decodeReplicaFinishReply(reply)).toBeUndefined();
  });

  it("the largest valid messages are the limits the gateway refuses above", () => {
    const id = "a".repeat(63);
    const z = (n: number): Uint8Array => new Uint8Array(n);
    expect(encodeReplicaHello({ clusterId: z(16), keyId: z(8), nonceD: z(32), replicaId: id }).byteLength).toBe(REPLICA_HELLO_MAX_BYTES);
    const finish = encodeReplicaFinish({ clusterId: z(16), keyId: z(8), nonceD: z(32), nonceA: z(32), identity: z(32), macD: z(32), signature: z(64), replicaId: id, acceptorId: id });
    expect(finish.byteLength).toBe(REPLICA_FINISH_MAX_BYTES);
    expect(REPLICA_FINISH_MAX_BYTES).toBe(345);
    expect(decodeReplicaFinish(finish)).not.toBeTypeOf("number");
    expect(decodeReplicaHello(new Uint8Array(REPLICA_HELLO_MAX_BYTES + 1).fill(1))).toBe(ReplicaHandshakeStatus.Malformed);
  });

  it("encoding refuses what no peer may parse: a field of the wrong size or an id that breaks the rules", () => {
    const z = (n: number): Uint8Array => new Uint8Array(n);
    expect(() => encodeReplicaHello({ clusterId: z(15), keyId: z(8), nonceD: z(32), replicaId: "node-2" })).toThrow(/cluster id must be 16 bytes/);
    expect(() => encodeReplicaHello({ clusterId: z(16), keyId: z(8), nonceD: z(32), replicaId: "Node 2" })).toThrow(ReplicaHandshakeError);
    expect(() => encodeReplicaChallenge({ nonceA: z(32), macA: z(31), acceptorId: "gw-1" })).toThrow(/mac_a/);
    expect(() => encodeReplicaFinishReply({ sessionId: z(16), createdAt: -1, expiresAt: 0 })).toThrow(ReplicaHandshakeError);
  });

  it("a received id is read byte by byte exactly as REPLICA_ID_PATTERN reads it, for every byte first and later", () => {
    const z = (n: number): Uint8Array => new Uint8Array(n);
    const hello = encodeReplicaHello({ clusterId: z(16), keyId: z(8), nonceD: z(32), replicaId: "ab" });
    for (let b = 0; b < 256; b++) {
      for (const at of [1, 2]) {
        const bytes = hello.slice();
        bytes[bytes.byteLength - 3 + at] = b;
        const id = String.fromCharCode(bytes[bytes.byteLength - 2]!, bytes[bytes.byteLength - 1]!);
        const decoded = decodeReplicaHello(bytes);
        expect(typeof decoded === "number" ? ReplicaHandshakeStatus.Malformed : decoded.replicaId, `byte ${b} at ${at}`).toBe(REPLICA_ID_PATTERN.test(id) ? id : ReplicaHandshakeStatus.Malformed);
      }
    }
  });

  it("an id checked once is not trusted twice: a bad id is refused however often it is asked, past the cache's bound too", () => {
    for (let i = 0; i < 2_100; i++) expect(replicaIdBytes("id", `node-${i}`)).toEqual(new TextEncoder().encode(`node-${i}`));
    for (let i = 0; i < 3; i++) expect(() => replicaIdBytes("replica id", "Node-1")).toThrow(/replica id must match/);
    expect(() => replicaIdBytes("id", "")).toThrow(ReplicaHandshakeError);
    expect(replicaIdBytes("id", "node-7")).toBe(replicaIdBytes("id", "node-7"));
  });
});
