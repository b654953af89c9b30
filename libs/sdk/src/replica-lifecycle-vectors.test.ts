import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  decodeRecoverySecret,
  deriveClusterKeys,
  encodeRecoverySecret,
  fromHex,
  latestPointerBytes,
  toBase64Url,
  toHex,
  unwrapCuk,
} from "@unibus/crypto";
import { historyEntryHash, verifyClusterHistory } from "./replica-history.js";
import type { ClusterHistoryEntry, ClusterLatest } from "./replica-history.js";

// The vectors come from contracts/vectors/generate-replica-lifecycle.ts, which uses only the
// portable references (@noble/*), so they check this code rather than echo it.
interface Vectors {
  seed: string;
  historyKey: string;
  agreementSecretKey: string;
  agreementKey: string;
  wrapKey: string;
  recoverySecret: string;
  genesis: { entry: ClusterHistoryEntry; entryHash: string; latestStatement: string; latest: ClusterLatest };
  wrap: { cuk: string; nodeId: string; joinKey: string; wrapped: string };
}
const v = JSON.parse(readFileSync(new URL("../../../contracts/vectors/replica-lifecycle.json", import.meta.url), "utf8")) as Vectors;

describe("contracts/vectors/replica-lifecycle.json", () => {
  it("seed derivations and the recovery secret", () => {
    const keys = deriveClusterKeys(fromHex(v.seed));
    expect(toHex(keys.historyKey.publicKey)).toBe(v.historyKey);
    expect(toHex(keys.agreementSecretKey)).toBe(v.agreementSecretKey);
    expect(toHex(keys.agreementPublicKey)).toBe(v.agreementKey);
    expect(toHex(keys.wrapKey)).toBe(v.wrapKey);
    expect(encodeRecoverySecret(fromHex(v.seed))).toBe(v.recoverySecret);
    expect(toHex(decodeRecoverySecret(v.recoverySecret))).toBe(v.seed);
  });

  it("the genesis entry hash, the latest pointer statement, and the whole one-entry history verifies", () => {
    expect(toHex(historyEntryHash(v.genesis.entry))).toBe(v.genesis.entryHash);
    const g = JSON.parse(v.genesis.entry.effect) as { clusterId: string };
    expect(toHex(latestPointerBytes(fromHex(g.clusterId), 0, fromHex(v.genesis.entryHash)))).toBe(v.genesis.latestStatement);
    expect(v.genesis.latest.hash).toBe(toBase64Url(fromHex(v.genesis.entryHash)));
    const h = verifyClusterHistory([v.genesis.entry], v.genesis.latest, { historyKey: v.historyKey });
    expect(h.headSeq).toBe(0);
  });

  it("a wrapped CUK opens to the vector's CUK", () => {
    const keys = deriveClusterKeys(fromHex(v.seed));
    expect(toHex(unwrapCuk(keys.wrapKey, fromHex(v.wrap.wrapped), v.wrap.nodeId, v.wrap.joinKey))).toBe(v.wrap.cuk);
  });
});
