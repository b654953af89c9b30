import { describe, expect, it } from "vitest";
import { createIdentity, toBase64Url } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { rekeyNeeded } from "./rekey.js";
import { agreementKeyStatementBytes, principalsHash } from "./share-set.js";

const [owner, late, other] = [createIdentity(), createIdentity(), createIdentity()] as [Identity, Identity, Identity];

/** A member as `agreement_keys` lists it: with a binding signed by `signer` (default: itself), or none. */
function listed(id: Identity, signer: Identity | null = id): { principal: string; agreementKey?: string; signature?: string } {
  if (signer === null) return { principal: id.principal };
  const signature = signer.signingKey.sign(agreementKeyStatementBytes(id.principal, id.agreementPublicKey));
  return { principal: id.principal, agreementKey: toBase64Url(id.agreementPublicKey), signature: toBase64Url(signature) };
}

const hashOf = (ids: Identity[]): string => toBase64Url(principalsHash(ids.map((i) => i.principal).sort()));

describe("rekeyNeeded: when an owner's client starts a new epoch", () => {
  it("not when the newest epoch has the room's members and nobody is pending", () => {
    expect(rekeyNeeded({ principalsHash: hashOf([owner, late]), pendingShares: [] }, [listed(owner), listed(late)])).toBe(false);
  });

  it("when there is no epoch yet, or the members changed", () => {
    expect(rekeyNeeded(undefined, [listed(owner)])).toBe(true);
    expect(rekeyNeeded({ principalsHash: hashOf([owner]) }, [listed(owner), listed(late)])).toBe(true);
  });

  it("when a member listed without a share has registered a key that verifies", () => {
    expect(rekeyNeeded({ principalsHash: hashOf([owner, late]), pendingShares: [late.principal] }, [listed(owner), listed(late)])).toBe(true);
  });

  it("not for a pending member whose binding is missing or not its own signature (a server cannot force rekeys)", () => {
    const current = { principalsHash: hashOf([owner, late]), pendingShares: [late.principal] };
    expect(rekeyNeeded(current, [listed(owner), listed(late, null)])).toBe(false);
    expect(rekeyNeeded(current, [listed(owner), listed(late, other)])).toBe(false);
    expect(rekeyNeeded(current, [listed(owner), { ...listed(late), agreementKey: toBase64Url(other.agreementPublicKey) }])).toBe(false);
  });

  it("not for a pending principal that is not among the room's members", () => {
    expect(rekeyNeeded({ principalsHash: hashOf([owner, late]), pendingShares: [other.principal] }, [listed(owner), listed(late)])).toBe(false);
  });
});
