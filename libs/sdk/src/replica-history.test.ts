import { describe, expect, it } from "vitest";
import { clusterIdFromName, createIdentity, deriveClusterKeys, generateClusterSeed, latestPointerBytes, nodeAgreementBytes, signEnvelope, SigningKey, toBase64Url, toHex } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { ClusterHistoryError, historyEntry, HistoryEntrySubject, HistoryEntryType, NodeState, VerifiedClusterHistory, verifyClusterHistory } from "./replica-history.js";
import type { ClusterHistoryEntry, ClusterLatest, GatewayEffect, GenesisEffect, NodeEffect } from "./replica-history.js";

const enc = new TextEncoder();
const CLUSTER = "prod";
const clusterId = clusterIdFromName(CLUSTER);
const admin = SigningKey.generate();
const gateway = SigningKey.generate();

interface Chain {
  entries: ClusterHistoryEntry[];
  log: VerifiedClusterHistory;
  keys: ReturnType<typeof deriveClusterKeys>;
}

function newChain(): Chain {
  const keys = deriveClusterKeys(generateClusterSeed());
  const chain: Chain = { entries: [], log: new VerifiedClusterHistory(), keys };
  add(chain, admin, HistoryEntryType.genesis, {
    clusterName: CLUSTER,
    clusterId: toHex(clusterId),
    historyKey: toHex(keys.historyKey.publicKey),
    agreementKey: toHex(keys.agreementPublicKey),
    gateways: [gateway.principal],
  });
  return chain;
}

const SUBJECT = HistoryEntrySubject;

function make(chain: Chain, actor: SigningKey, type: HistoryEntryType, effect: GenesisEffect | NodeEffect | GatewayEffect): ClusterHistoryEntry {
  const body = enc.encode(JSON.stringify({ type, n: chain.entries.length }));
  return historyEntry({ after: chain.log, type, body, envelope: signEnvelope(actor, SUBJECT[type], body), effect, at: new Date().toISOString() });
}

function add(chain: Chain, actor: SigningKey, type: HistoryEntryType, effect: GenesisEffect | NodeEffect | GatewayEffect): ClusterHistoryEntry {
  const e = make(chain, actor, type, effect);
  chain.log.append([e]);
  chain.entries.push(e);
  return e;
}

function registerEffect(node: Identity, nodeId: string): NodeEffect {
  return {
    nodeId,
    joinKey: node.principal,
    agreementKey: toHex(node.agreementPublicKey),
    agreementSig: toHex(node.signingKey.sign(nodeAgreementBytes(clusterId, nodeId, node.agreementPublicKey))),
  };
}

function latestOf(chain: Chain, key = chain.keys.historyKey, seq = chain.log.headSeq): ClusterLatest {
  const hash = chain.log.hashAt(seq) as Uint8Array;
  return { seq, hash: toBase64Url(hash), signature: toBase64Url(key.sign(latestPointerBytes(clusterId, seq, hash))) };
}

/** A chain through every transition of one node. */
function fullChain(): { chain: Chain; node: Identity } {
  const chain = newChain();
  const node = createIdentity();
  add(chain, node.signingKey, HistoryEntryType.register, registerEffect(node, "node-4"));
  add(chain, admin, HistoryEntryType.approve, { nodeId: "node-4" });
  add(chain, node.signingKey, HistoryEntryType.commit, { nodeId: "node-4" });
  add(chain, admin, HistoryEntryType.decommission, { nodeId: "node-4" });
  return { chain, node };
}

function reason(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    if (err instanceof ClusterHistoryError) return err.reason;
    throw err;
  }
  throw new Error("expected a ClusterHistoryError");
}

describe("cluster history verifier", () => {
  it("verifies a full chain and derives the node states and the join-key index", () => {
    const { chain, node } = fullChain();
    const h = verifyClusterHistory(chain.entries, latestOf(chain), { historyKey: toHex(chain.keys.historyKey.publicKey) });
    expect(h.nodes.get("node-4")).toMatchObject({ state: NodeState.decommissioned, joinKey: node.principal, seq: 4 });
    expect(h.joinKeys.get(node.principal)).toBe("node-4");
    expect(h.genesis?.gateways).toEqual([gateway.principal]);
  });

  it("refuses a forked chain: an entry changed after the fact, or a different genesis key", () => {
    const { chain } = fullChain();
    // Another valid branch at seq 4 (a second decommission request) against the signed pointer of the first.
    const branch: Chain = { entries: chain.entries.slice(0, 4), log: new VerifiedClusterHistory(), keys: chain.keys };
    branch.log.append(branch.entries);
    add(branch, admin, HistoryEntryType.decommission, { nodeId: "node-4" });
    expect(reason(() => verifyClusterHistory(branch.entries, latestOf(chain)))).toBe("history_fork");
    // An entry edited in place breaks the link from the entry after it.
    const edited = chain.entries.map((e) => ({ ...e }));
    (edited[1] as ClusterHistoryEntry).effect = JSON.stringify({ nodeId: "node-5", joinKey: JSON.parse((edited[1] as ClusterHistoryEntry).effect).joinKey });
    expect(() => verifyClusterHistory(edited, latestOf(chain))).toThrow(ClusterHistoryError);
    const other = newChain();
    expect(reason(() => verifyClusterHistory(chain.entries, latestOf(chain), { historyKey: toHex(other.keys.historyKey.publicKey) }))).toBe("history_fork");
  });

  it("refuses a truncated chain: the signed pointer names an entry the chain does not have", () => {
    const { chain } = fullChain();
    expect(reason(() => verifyClusterHistory(chain.entries.slice(0, 3), latestOf(chain)))).toBe("history_truncated");
  });

  it("refuses an unsigned or wrongly signed pointer, and an actor signature that does not verify", () => {
    const { chain } = fullChain();
    expect(reason(() => verifyClusterHistory(chain.entries, latestOf(chain, SigningKey.generate())))).toBe("history_bad_latest");
    expect(reason(() => verifyClusterHistory(chain.entries, { ...latestOf(chain), signature: "" }))).toBe("history_bad_latest");
    const tampered = chain.entries.map((e) => ({ ...e }));
    const last = tampered[4] as ClusterHistoryEntry;
    last.signature = (last.signature[0] === "A" ? "B" : "A") + last.signature.slice(1);
    expect(reason(() => verifyClusterHistory(tampered, latestOf(chain)))).toBe("history_bad_signature");
  });

  it("refuses a rollback below a pinned head, and a different entry at the pinned seq", () => {
    const { chain } = fullChain();
    const pin = { seq: 4, hash: toBase64Url(chain.log.hashAt(4) as Uint8Array) };
    const short = new VerifiedClusterHistory();
    short.append(chain.entries.slice(0, 3));
    const shortLatest: ClusterLatest = { seq: 2, hash: toBase64Url(short.headHash), signature: toBase64Url(chain.keys.historyKey.sign(latestPointerBytes(clusterId, 2, short.headHash))) };
    expect(reason(() => verifyClusterHistory(chain.entries.slice(0, 3), shortLatest, { pin }))).toBe("history_rollback");
    expect(reason(() => verifyClusterHistory(chain.entries, latestOf(chain), { pin: { seq: 4, hash: toBase64Url(new Uint8Array(32)) } }))).toBe("history_fork");
    expect(() => verifyClusterHistory(chain.entries, latestOf(chain), { pin })).not.toThrow();
  });

  it("refuses transitions the state does not allow", () => {
    const chain = newChain();
    const node = createIdentity();
    expect(reason(() => chain.log.check(make(chain, admin, HistoryEntryType.approve, { nodeId: "node-4" })))).toBe("unknown_node");
    // Registered by a key other than the join key it names.
    expect(reason(() => chain.log.check(make(chain, admin, HistoryEntryType.register, registerEffect(node, "node-4"))))).toBe("history_bad_signature");
    add(chain, node.signingKey, HistoryEntryType.register, registerEffect(node, "node-4"));
    expect(reason(() => chain.log.check(make(chain, node.signingKey, HistoryEntryType.register, registerEffect(node, "node-5"))))).toBe("join_key_exists");
    expect(reason(() => chain.log.check(make(chain, node.signingKey, HistoryEntryType.commit, { nodeId: "node-4" })))).toBe("not_approved");
    add(chain, admin, HistoryEntryType.approve, { nodeId: "node-4" });
    expect(reason(() => chain.log.check(make(chain, admin, HistoryEntryType.approve, { nodeId: "node-4" })))).toBe("state_conflict");
    expect(reason(() => chain.log.check(make(chain, createIdentity().signingKey, HistoryEntryType.commit, { nodeId: "node-4" })))).toBe("history_bad_signature");
    add(chain, admin, HistoryEntryType.decommission, { nodeId: "node-4" });
    expect(reason(() => chain.log.check(make(chain, node.signingKey, HistoryEntryType.commit, { nodeId: "node-4" })))).toBe("decommissioned");
    expect(reason(() => chain.log.check(make(chain, node.signingKey, HistoryEntryType.register, registerEffect(node, "node-9"))))).toBe("join_key_exists");
  });

  it("refuses an effect with extra fields (not canonical) and a second genesis", () => {
    const chain = newChain();
    const e = make(chain, admin, HistoryEntryType.approve, { nodeId: "node-4" });
    expect(reason(() => chain.log.check({ ...e, effect: JSON.stringify({ nodeId: "node-4", extra: 1 }) }))).toBe("history_bad_entry");
    const g = chain.log.genesis as GenesisEffect;
    expect(reason(() => chain.log.check(make(chain, admin, HistoryEntryType.genesis, g)))).toBe("history_bad_entry");
  });

  it("gateway changes move the manifest: add once, remove a listed one, never the last", () => {
    const chain = newChain();
    const extra = SigningKey.generate().principal;
    expect(reason(() => chain.log.check(make(chain, admin, HistoryEntryType.gatewayRemove, { principal: extra })))).toBe("unknown_gateway");
    expect(reason(() => chain.log.check(make(chain, admin, HistoryEntryType.gatewayRemove, { principal: gateway.principal })))).toBe("state_conflict");
    add(chain, admin, HistoryEntryType.gatewayAdd, { principal: extra });
    expect(chain.log.gateways).toEqual([gateway.principal, extra]);
    expect(reason(() => chain.log.check(make(chain, admin, HistoryEntryType.gatewayAdd, { principal: extra })))).toBe("state_conflict");
    add(chain, admin, HistoryEntryType.gatewayRemove, { principal: gateway.principal });
    expect(chain.log.gateways).toEqual([extra]);
    // The genesis still names the first list; the manifest is the chain's.
    expect(chain.log.genesis?.gateways).toEqual([gateway.principal]);
    expect(verifyClusterHistory(chain.entries, latestOf(chain)).gateways).toEqual([extra]);
  });
});
