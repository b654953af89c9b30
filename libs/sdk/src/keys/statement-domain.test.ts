import { describe, expect, it } from "vitest";
import { ConnectNonceError, nkeyAuthenticator, SigningKey, verifySignature } from "@unibus/crypto";
import { agreementKeyStatementBytes, epochStatementBytes } from "./share-set.js";

/** What a malicious server sends as its connect nonce: the statement's bytes as a string. */
function asNonce(bytes: Uint8Array): string {
  return new TextDecoder("utf-8", { fatal: false }).decode(bytes);
}

describe("domain separation of identity-key signatures", () => {
  // The attack: the server grinds X25519 keys until one's binding statement is
  // valid UTF-8 (here: 32 printable ASCII bytes), sends it as the connect
  // nonce, and keeps the victim's signature as a binding of its own key.
  const victim = SigningKey.generate();
  const serverKey = utf8Encode("A".repeat(32));

  it("a connect nonce crafted as an agreement-key statement is refused before anything is signed", () => {
    const statement = agreementKeyStatementBytes(victim.principal, serverKey);
    const auth = nkeyAuthenticator(victim);
    expect(() => auth(asNonce(statement))).toThrow(ConnectNonceError);
    // Without the marker (the old format) the statement was valid UTF-8; it is refused too.
    expect(() => auth(new TextDecoder("utf-8", { fatal: true }).decode(statement.subarray(1)))).toThrow(ConnectNonceError);
  });

  it("every statement starts with 0xFF, which the UTF-8 bytes of no nonce string can, so a nonce signature verifies as no statement", () => {
    const agreement = agreementKeyStatementBytes(victim.principal, serverKey);
    const epoch = epochStatementBytes({ roomId: "ops", epoch: 1, distributor: victim.principal, leafCount: 1, root: new Uint8Array(32), logSeq: 0, logHead: new Uint8Array(32), recipients: new Uint8Array(32) });
    for (const s of [agreement, epoch]) {
      expect(s[0]).toBe(0xff);
      // Even a lossy decode of the statement re-encodes without the marker.
      expect(utf8Encode(asNonce(s))[0]).not.toBe(0xff);
    }
    const { sig } = nkeyAuthenticator(victim)("UOdu24sAYzW8SmY");
    expect(verifySignature(victim.publicKey, agreement, Buffer.from(sig, "base64"))).toBe(false);
    expect(verifySignature(victim.publicKey, epoch, Buffer.from(sig, "base64"))).toBe(false);
  });
});

function utf8Encode(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}
