import * as ed from "@noble/ed25519";
import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { blake3 } from "@noble/hashes/blake3.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { aeadDecrypt, aeadEncrypt } from "./aead.js";
import { nkeyAuthenticator } from "./authenticator.js";
import { SigningKey, verifySignature } from "./ed25519.js";
import { fromHex, toHex } from "./encoding.js";
import { envelopeSigningBytes, signEnvelope, verifyEnvelope } from "./envelope.js";
import { normalisePrincipal, publicKeyFromPrincipal } from "./principal.js";
import { openSealed, SealedBox, sealToManyWithEphemeralSecret, sealToVerifiedWith, sealWithEphemeralSecret } from "./sealed-box.js";
import { agreementPublicKey, x25519SharedSecret } from "./x25519.js";

ed.hashes.sha512 = sha512;

// The vectors come from contracts/vectors/generate.ts, which uses only the
// portable references (@noble/*, @nats-io/nkeys); each test checks both the
// reference and this package's node:crypto path against the frozen bytes.
function vectors<T>(name: string): T {
  return JSON.parse(readFileSync(new URL(`../../../contracts/vectors/${name}`, import.meta.url), "utf8")) as T;
}

interface Ed25519Vectors {
  cases: {
    name: string;
    seed: string;
    publicKey: string;
    message: string;
    signature: string;
    nkeyUserSeed: string;
    principal: string;
    nkeyAccountSeed: string;
    nkeyAccountPublic: string;
  }[];
  nkeyAuth: { nkeyUserSeed: string; nonce: string; nkey: string; sig: string };
}
interface X25519Vectors {
  cases: { name: string; secretKey: string; publicKey: string; peerPublicKey: string; shared: string }[];
}
interface AeadVectors {
  cases: { name: string; key: string; nonce: string; plaintext: string; associatedData?: string; ciphertext: string }[];
}
interface EnvelopeVectors {
  seed: string;
  cases: {
    name: string;
    subject: string;
    body: string;
    signingBytes: string;
    envelope: { signer: string; timestamp: number; nonce: string; signature: string };
  }[];
}
interface SealedVectors {
  cases: { name: string; recipientSecretKey: string; recipientPublicKey: string; ephemeralSecretKey: string; plaintext: string; sealed: string }[];
  multiRecipient: {
    ephemeralSecretKey: string;
    ephemeralPublicKey: string;
    plaintext: string;
    recipients: { recipientSecretKey: string; recipientPublicKey: string; shared: string; key: string; nonce: string; sealed: string }[];
  };
}

describe("contracts/vectors/ed25519.json", () => {
  const v = vectors<Ed25519Vectors>("ed25519.json");
  for (const c of v.cases) {
    it(`${c.name}: node and noble produce the vector's public key and signature`, () => {
      const key = SigningKey.fromSeed(fromHex(c.seed));
      expect(toHex(key.publicKey)).toBe(c.publicKey);
      expect(toHex(key.sign(fromHex(c.message)))).toBe(c.signature);
      expect(toHex(ed.getPublicKey(fromHex(c.seed)))).toBe(c.publicKey);
      expect(toHex(ed.sign(fromHex(c.message), fromHex(c.seed)))).toBe(c.signature);
      expect(verifySignature(fromHex(c.publicKey), fromHex(c.message), fromHex(c.signature))).toBe(true);
    });
    it(`${c.name}: nkey seeds and principals match @nats-io/nkeys`, () => {
      const key = SigningKey.fromSeed(fromHex(c.seed));
      expect(key.principal).toBe(c.principal);
      expect(key.nkeySeed()).toBe(c.nkeyUserSeed);
      expect(key.nkeyPublic("A")).toBe(c.nkeyAccountPublic);
      const account = SigningKey.fromNkeySeed(c.nkeyAccountSeed);
      expect(account.principal).toBe(c.nkeyAccountPublic);
      expect(account.nkeySeed()).toBe(c.nkeyAccountSeed);
      expect(normalisePrincipal(c.publicKey)).toBe(c.principal);
      expect(toHex(publicKeyFromPrincipal(c.principal))).toBe(c.publicKey);
    });
  }
  it("nkeyAuthenticator reproduces the nats.js connect signature", () => {
    const auth = nkeyAuthenticator(SigningKey.fromNkeySeed(v.nkeyAuth.nkeyUserSeed));
    expect(auth(v.nkeyAuth.nonce)).toEqual({ nkey: v.nkeyAuth.nkey, sig: v.nkeyAuth.sig });
  });
});

describe("contracts/vectors/x25519.json", () => {
  for (const c of vectors<X25519Vectors>("x25519.json").cases) {
    it(`${c.name}: node and noble agree on public key and shared secret`, () => {
      const sk = fromHex(c.secretKey);
      expect(toHex(agreementPublicKey(sk))).toBe(c.publicKey);
      expect(toHex(x25519SharedSecret(sk, fromHex(c.peerPublicKey)))).toBe(c.shared);
      expect(toHex(x25519.getPublicKey(sk))).toBe(c.publicKey);
      expect(toHex(x25519.getSharedSecret(sk, fromHex(c.peerPublicKey)))).toBe(c.shared);
    });
  }
});

describe("contracts/vectors/xchacha20poly1305.json", () => {
  for (const c of vectors<AeadVectors>("xchacha20poly1305.json").cases) {
    it(`${c.name}: node path and noble produce the vector's ciphertext, and both decrypt it`, () => {
      const [key, nonce, pt] = [fromHex(c.key), fromHex(c.nonce), fromHex(c.plaintext)];
      const ad = c.associatedData === undefined ? undefined : fromHex(c.associatedData);
      expect(toHex(aeadEncrypt(key, nonce, pt, ad))).toBe(c.ciphertext);
      expect(toHex(xchacha20poly1305(key, nonce, ad).encrypt(pt))).toBe(c.ciphertext);
      expect(toHex(aeadDecrypt(key, nonce, fromHex(c.ciphertext), ad))).toBe(c.plaintext);
      expect(toHex(xchacha20poly1305(key, nonce, ad).decrypt(fromHex(c.ciphertext)))).toBe(c.plaintext);
    });
  }
});

describe("contracts/vectors/envelope.json", () => {
  const v = vectors<EnvelopeVectors>("envelope.json");
  for (const c of v.cases) {
    it(`${c.name}: signing bytes and signature match the spec, and the envelope verifies`, () => {
      const body = fromHex(c.body);
      const bytes = envelopeSigningBytes(c.subject, c.envelope.timestamp, c.envelope.nonce, body);
      expect(toHex(bytes)).toBe(c.signingBytes);
      const key = SigningKey.fromSeed(fromHex(v.seed));
      expect(key.principal).toBe(c.envelope.signer);
      expect(Buffer.from(key.sign(bytes)).toString("base64url")).toBe(c.envelope.signature);
      expect(Buffer.from(ed.sign(bytes, fromHex(v.seed))).toString("base64url")).toBe(c.envelope.signature);
      expect(verifyEnvelope(c.envelope, c.subject, body)).toBe(true);
      const fresh = signEnvelope(key, c.subject, body, c.envelope.timestamp);
      expect(verifyEnvelope(fresh, c.subject, body)).toBe(true);
    });
  }
});

describe("contracts/vectors/sealed-box.json", () => {
  for (const c of vectors<SealedVectors>("sealed-box.json").cases) {
    it(`${c.name}: sealing with the vector's ephemeral key reproduces it, and it opens`, () => {
      const rpk = fromHex(c.recipientPublicKey);
      expect(toHex(sealWithEphemeralSecret(rpk, fromHex(c.plaintext), fromHex(c.ephemeralSecretKey)))).toBe(c.sealed);
      expect(toHex(openSealed(fromHex(c.recipientSecretKey), fromHex(c.sealed)))).toBe(c.plaintext);
    });
  }
});

describe("contracts/vectors/sealed-box.json multiRecipient (one ephemeral, many recipients)", () => {
  const m = vectors<SealedVectors>("sealed-box.json").multiRecipient;
  const esk = fromHex(m.ephemeralSecretKey);
  const pt = fromHex(m.plaintext);

  it("node path: sealToMany with the vector's ephemeral reproduces every box, and each recipient opens its own only", () => {
    const boxes = sealToManyWithEphemeralSecret(m.recipients.map((r) => fromHex(r.recipientPublicKey)), pt, esk);
    expect(boxes.map(toHex)).toEqual(m.recipients.map((r) => r.sealed));
    m.recipients.forEach((r, i) => {
      expect(toHex(boxes[i]!.subarray(1, SealedBox.headerLength))).toBe(m.ephemeralPublicKey);
      expect(toHex(openSealed(fromHex(r.recipientSecretKey), fromHex(r.sealed)))).toBe(m.plaintext);
      const other = m.recipients[(i + 1) % m.recipients.length]!;
      expect(() => openSealed(fromHex(other.recipientSecretKey), fromHex(r.sealed))).toThrow();
    });
  });

  it("pool path: sealToVerified with the vector's ephemeral reproduces every box on the worker threads and inline", async () => {
    // Enough recipients (the vector's, repeated) that the sealing runs on the crypto pool.
    const owner = SigningKey.generate();
    const recipients = Array.from({ length: 80 }, (_, i) => {
      const agreementKey = fromHex(m.recipients[i % m.recipients.length]!.recipientPublicKey);
      return { agreementKey, binding: { publicKey: owner.publicKey, data: agreementKey, signature: owner.sign(agreementKey) } };
    });
    const want = recipients.map((_, i) => m.recipients[i % m.recipients.length]!.sealed);
    for (const inline of [false, true]) {
      const sealed = await sealToVerifiedWith(recipients, pt, { ephemeralSecretKey: esk, inline });
      expect(sealed.map((s) => (s.box === null ? null : toHex(s.box)))).toEqual(want);
      expect(sealed.every((s) => s.verified)).toBe(true);
    }
  });

  it("noble reference: per-recipient shared secret, key and nonce, box; keys and nonces are all distinct", () => {
    const epk = x25519.getPublicKey(esk);
    expect(toHex(epk)).toBe(m.ephemeralPublicKey);
    for (const r of m.recipients) {
      const rpk = fromHex(r.recipientPublicKey);
      const shared = x25519.getSharedSecret(esk, rpk);
      expect(toHex(shared)).toBe(r.shared);
      expect(toHex(x25519.getSharedSecret(fromHex(r.recipientSecretKey), epk))).toBe(r.shared);
      const okm = blake3(new Uint8Array([...shared, ...epk, ...rpk]), { context: new TextEncoder().encode(SealedBox.kdfContext), dkLen: 56 });
      expect(toHex(okm.subarray(0, 32))).toBe(r.key);
      expect(toHex(okm.subarray(32))).toBe(r.nonce);
      const header = new Uint8Array([SealedBox.version, ...epk]);
      const box = new Uint8Array([...header, ...xchacha20poly1305(okm.subarray(0, 32), okm.subarray(32), header).encrypt(pt)]);
      expect(toHex(box)).toBe(r.sealed);
      expect(toHex(xchacha20poly1305(fromHex(r.key), fromHex(r.nonce), header).decrypt(fromHex(r.sealed).subarray(SealedBox.headerLength)))).toBe(m.plaintext);
    }
    for (const f of ["recipientPublicKey", "shared", "key", "nonce", "sealed"] as const) {
      expect(new Set(m.recipients.map((r) => r[f])).size).toBe(m.recipients.length);
    }
  });
});
