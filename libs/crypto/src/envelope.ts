import type { SignatureCheck, SigningKey } from "./ed25519.js";
import { verifySignature } from "./ed25519.js";
import { fromBase64Url, randomBytes, toBase64Url, toHex, utf8 } from "./encoding.js";
import { sha256 } from "./hash.js";
import { isPrincipal, publicKeyFromPrincipal } from "./principal.js";
import { STATEMENT_MARKER } from "./statement-marker.js";

/** NATS header names that carry a signed request envelope (architecture §4). */
export const EnvelopeHeader = {
  signer: "Unibus-Signer",
  timestamp: "Unibus-Ts",
  nonce: "Unibus-Nonce",
  signature: "Unibus-Sig",
} as const;
/** One of the {@link EnvelopeHeader} names. */
export type EnvelopeHeader = (typeof EnvelopeHeader)[keyof typeof EnvelopeHeader];

/** A signed request envelope. Field formats are strict: anything else fails verification. */
export interface Envelope {
  /** Principal (`U…` user nkey) of the signing key. */
  signer: string;
  /** Signing time, unix milliseconds (non-negative safe integer). The kit enforces ±30 s freshness. */
  timestamp: number;
  /** 16 random bytes as 32 lowercase hex characters. The kit rejects reuse on mutating requests. */
  nonce: string;
  /** Ed25519 signature over {@link envelopeSigningBytes}, base64url without padding (86 characters). */
  signature: string;
}

/** Domain-separation tag: a signature made for an envelope is useless in any other protocol, and vice versa. */
const DOMAIN = utf8("unibus-envelope-v1");
const NONCE_RE = /^[0-9a-f]{32}$/;
const SIGNATURE_RE = /^[A-Za-z0-9_-]{86}$/;

/**
 * The canonical byte string an envelope signature covers (contracts/specs/identity-and-envelope.md):
 *
 * ```
 * u8(0xFF)                      (statement marker: never valid UTF-8, so never a connect nonce)
 * u8(18) "unibus-envelope-v1"
 * u32be(len) utf8(subject)
 * u64be(timestamp)
 * u8(32) ascii(nonce)
 * sha256(body)                  (32 bytes)
 * ```
 *
 * Every variable field is length-prefixed so no two (subject, nonce) splits
 * give the same bytes; the subject is signed so a signature for one endpoint
 * cannot be replayed against another. Throws RangeError on a timestamp that
 * is not a non-negative safe integer or a nonce that is not 32 lowercase hex.
 */
export function envelopeSigningBytes(subject: string, timestamp: number, nonce: string, body: Uint8Array): Uint8Array {
  return envelopeSigningBytesForBodyHash(subject, timestamp, nonce, sha256(body));
}

/**
 * {@link envelopeSigningBytes} from the body's SHA-256 instead of the body:
 * a record that must not keep a body (it holds a sealed secret) keeps its
 * hash and can still prove who signed it.
 */
export function envelopeSigningBytesForBodyHash(subject: string, timestamp: number, nonce: string, bodyHash: Uint8Array): Uint8Array {
  if (bodyHash.byteLength !== 32) throw new RangeError("envelope body hash must be 32 bytes");
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) throw new RangeError("envelope timestamp must be a non-negative safe integer");
  if (!NONCE_RE.test(nonce)) throw new RangeError("envelope nonce must be 32 lowercase hex characters");
  const subjectBytes = utf8(subject);
  const nonceBytes = utf8(nonce);
  const out = new Uint8Array(2 + DOMAIN.byteLength + 4 + subjectBytes.byteLength + 8 + 1 + nonceBytes.byteLength + 32);
  const view = new DataView(out.buffer);
  let off = 0;
  out[off++] = STATEMENT_MARKER;
  out[off++] = DOMAIN.byteLength;
  out.set(DOMAIN, off);
  off += DOMAIN.byteLength;
  view.setUint32(off, subjectBytes.byteLength);
  off += 4;
  out.set(subjectBytes, off);
  off += subjectBytes.byteLength;
  view.setBigUint64(off, BigInt(timestamp));
  off += 8;
  out[off++] = nonceBytes.byteLength;
  out.set(nonceBytes, off);
  off += nonceBytes.byteLength;
  out.set(bodyHash, off);
  return out;
}

/** Signs a request for `subject` with a fresh random nonce. `now` (unix ms) defaults to `Date.now()`. */
export function signEnvelope(key: SigningKey, subject: string, body: Uint8Array, now: number = Date.now()): Envelope {
  const nonce = toHex(randomBytes(16));
  const signature = toBase64Url(key.sign(envelopeSigningBytes(subject, now, nonce, body)));
  return { signer: key.principal, timestamp: now, nonce, signature };
}

/**
 * Checks the envelope's signature against `subject` and `body`. Signature
 * only: freshness and nonce reuse are the service kit's job. Returns false
 * (never throws) on any malformed field, including a non-canonical base64url
 * signature, so one signature has exactly one accepted spelling.
 */
export function verifyEnvelope(envelope: Envelope, subject: string, body: Uint8Array): boolean {
  return body instanceof Uint8Array && verifyEnvelopeForBodyHash(envelope, subject, sha256(body));
}

/** {@link verifyEnvelope} against the body's SHA-256 (see {@link envelopeSigningBytesForBodyHash}). */
export function verifyEnvelopeForBodyHash(envelope: Envelope, subject: string, bodyHash: Uint8Array): boolean {
  const check = envelopeCheckForBodyHash(envelope, subject, bodyHash);
  return check !== undefined && verifySignature(check.publicKey, check.data, check.signature);
}

/**
 * The one signature check {@link verifyEnvelope} makes, after the same
 * format checks (a valid `U…` signer, nonce, timestamp and one canonical
 * signature spelling), or undefined where one fails, i.e. where
 * {@link verifyEnvelope} is false whatever the signature. So a batch
 * verifier (`verifyMany`) can check many envelopes and answer each exactly
 * as {@link verifyEnvelope} would. Never throws.
 */
export function envelopeCheck(envelope: Envelope, subject: string, body: Uint8Array): SignatureCheck | undefined {
  return body instanceof Uint8Array ? envelopeCheckForBodyHash(envelope, subject, sha256(body)) : undefined;
}

function envelopeCheckForBodyHash(envelope: Envelope, subject: string, bodyHash: Uint8Array): SignatureCheck | undefined {
  try {
    if (typeof envelope !== "object" || envelope === null) return undefined;
    const { signer, timestamp, nonce, signature } = envelope;
    const publicKey = typeof signer === "string" ? signerKey(signer) : undefined;
    if (publicKey === undefined) return undefined;
    if (typeof subject !== "string" || !(bodyHash instanceof Uint8Array) || bodyHash.byteLength !== 32) return undefined;
    if (typeof nonce !== "string" || !NONCE_RE.test(nonce)) return undefined;
    if (typeof timestamp !== "number" || !Number.isSafeInteger(timestamp) || timestamp < 0) return undefined;
    if (typeof signature !== "string" || !SIGNATURE_RE.test(signature)) return undefined;
    // One spelling per signature: 86 characters carry 516 bits for 512, and
    // the last character's 4 spare bits must be zero (A, Q, g or w); a
    // second spelling would let a replayed request pass as a new one.
    if (!CANONICAL_LAST.has(signature.charCodeAt(85))) return undefined;
    return { publicKey, data: envelopeSigningBytesForBodyHash(subject, timestamp, nonce, bodyHash), signature: fromBase64Url(signature) };
  } catch {
    return undefined;
  }
}

/** Last characters of a canonical 86-character base64url signature: the 4 bits past the 64th byte are zero. */
const CANONICAL_LAST = new Set(["A", "Q", "g", "w"].map((c) => c.charCodeAt(0)));

/** Signers' keys decoded, by principal: a log page's entries are mostly one signer's (an owner's), and an nkey decode checks a CRC over base32. */
const signerKeys = new Map<string, Uint8Array>();
const SIGNER_KEYS_MAX = 4096;

/**
 * The Ed25519 key of a `U…` signer, or undefined for anything else (a hex
 * key, another kind, a bad checksum); only valid ones are kept, bounded, so
 * distinct signers cannot grow memory. A copy each time: a check that
 * changed its key must not change the next signer's.
 */
function signerKey(signer: string): Uint8Array | undefined {
  let key = signerKeys.get(signer);
  if (key === undefined) {
    if (!isPrincipal(signer)) return undefined;
    key = publicKeyFromPrincipal(signer);
    if (signerKeys.size >= SIGNER_KEYS_MAX) signerKeys.clear();
    signerKeys.set(signer, key);
  }
  return key.slice();
}

/** The envelope as NATS header values (header name → value). */
export function envelopeToHeaders(envelope: Envelope): Record<EnvelopeHeader, string> {
  return {
    [EnvelopeHeader.signer]: envelope.signer,
    [EnvelopeHeader.timestamp]: String(envelope.timestamp),
    [EnvelopeHeader.nonce]: envelope.nonce,
    [EnvelopeHeader.signature]: envelope.signature,
  };
}

/**
 * Reads an envelope from headers via a getter (e.g. `(n) => msg.headers?.get(n)`).
 * Returns undefined when a header is missing or the timestamp is not a
 * canonical decimal integer; other fields are checked by {@link verifyEnvelope}.
 */
export function envelopeFromHeaders(get: (name: string) => string | undefined | null): Envelope | undefined {
  const signer = get(EnvelopeHeader.signer);
  const ts = get(EnvelopeHeader.timestamp);
  const nonce = get(EnvelopeHeader.nonce);
  const signature = get(EnvelopeHeader.signature);
  if (!signer || !ts || !nonce || !signature) return undefined;
  if (!/^(0|[1-9][0-9]{0,15})$/.test(ts)) return undefined;
  const timestamp = Number(ts);
  if (!Number.isSafeInteger(timestamp)) return undefined;
  return { signer, timestamp, nonce, signature };
}
