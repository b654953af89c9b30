import { hsalsa, xsalsa20poly1305 } from "@noble/ciphers/salsa.js";
import {
  NkeyPrefix,
  agreementPublicKey,
  decodeNkeyPublic,
  decodeNkeySeed,
  encodeNkeyPublic,
  encodeNkeySeed,
  randomBytes,
  x25519SharedSecret,
} from "@unibus/crypto";
import { CalloutConfigError, InvalidRequestError } from "./errors.js";

/** `xkv1`: the version tag nats-io/nkeys puts in front of every sealed message. */
const XKV1 = Uint8Array.of(0x78, 0x6b, 0x76, 0x31);
const NONCE_LEN = 24;
const TAG_LEN = 16;
const HEADER_LEN = XKV1.length + NONCE_LEN;

// "expand 32-byte k" as little-endian words: the Salsa20 constant crypto_box's
// key derivation (HSalsa20 over the X25519 output, zero input) uses.
const SIGMA = toWords(new TextEncoder().encode("expand 32-byte k"));
const ZERO16 = new Uint32Array(4);

// Copies into a fresh, aligned buffer (Node Buffers can be slices of a shared pool).
function toWords(b: Uint8Array): Uint32Array {
  return new Uint32Array(new Uint8Array(b).buffer);
}

/** Peers are few (one per nats-server) but the header is attacker-influenced: bound the cache. */
const SHARED_CACHE_MAX = 64;

/**
 * The callout's curve (X25519) key, sealing and opening messages exactly as
 * nats-io/nkeys `CurveKP` does: `"xkv1" ‖ nonce(24) ‖ crypto_box(msg)`, where
 * crypto_box = XSalsa20-Poly1305 under HSalsa20(X25519(our secret, their public)).
 *
 * The box key is precomputed once per server xkey (`crypto_box_beforenm`):
 * tweetnacl redoes the scalar multiplication on every message, which was a
 * large share of the per-login cost (nats-notes "Auth callout").
 */
export class CalloutXkey {
  readonly #secret: Uint8Array;
  readonly #shared = new Map<string, Uint8Array>();
  /** The public curve key (`X…`) to put in the server's `auth_callout { xkey }`. */
  readonly publicKey: string;

  private constructor(secret: Uint8Array) {
    this.#secret = secret;
    this.publicKey = encodeNkeyPublic(NkeyPrefix.curve, agreementPublicKey(secret));
  }

  /** From a curve seed string (`SX…`), as written by `nsc`/`nk -gen x25519` or @nats-io/nkeys. */
  static fromSeed(seed: string): CalloutXkey {
    let decoded: { prefix: NkeyPrefix; seed: Uint8Array };
    try {
      decoded = decodeNkeySeed(seed);
    } catch (cause) {
      throw new CalloutConfigError("xkey seed is not a valid nkey seed", { cause });
    }
    if (decoded.prefix !== NkeyPrefix.curve) throw new CalloutConfigError("xkey seed is not a curve (SX…) seed");
    return new CalloutXkey(decoded.seed);
  }

  /** A fresh random curve key. */
  static generate(): CalloutXkey {
    return new CalloutXkey(randomBytes(32));
  }

  /** The seed string (`SX…`). A secret: 0600 files only, never logs. */
  seed(): string {
    return encodeNkeySeed(NkeyPrefix.curve, this.#secret);
  }

  #boxKey(peer: string): Uint8Array {
    const hit = this.#shared.get(peer);
    if (hit !== undefined) return hit;
    const peerKey = decodeNkeyPublic(NkeyPrefix.curve, peer);
    if (peerKey === undefined) throw new InvalidRequestError("not a curve public key");
    let dh: Uint8Array;
    try {
      dh = x25519SharedSecret(this.#secret, peerKey);
    } catch (cause) {
      throw new InvalidRequestError("unusable curve public key", { cause });
    }
    const out = new Uint32Array(8);
    hsalsa(SIGMA, toWords(dh), ZERO16, out);
    dh.fill(0);
    const key = new Uint8Array(out.buffer);
    if (this.#shared.size >= SHARED_CACHE_MAX) {
      const oldest = this.#shared.keys().next().value;
      if (oldest !== undefined) this.#shared.delete(oldest);
    }
    this.#shared.set(peer, key);
    return key;
  }

  /** Seals `message` to `recipient` (`X…`) in the `xkv1` format. */
  seal(message: Uint8Array, recipient: string): Uint8Array {
    const nonce = randomBytes(NONCE_LEN);
    const boxed = xsalsa20poly1305(this.#boxKey(recipient), nonce).encrypt(message);
    const out = new Uint8Array(HEADER_LEN + boxed.byteLength);
    out.set(XKV1, 0);
    out.set(nonce, XKV1.length);
    out.set(boxed, HEADER_LEN);
    return out;
  }

  /**
   * Opens an `xkv1` message from `sender` (`X…`).
   *
   * @throws InvalidRequestError when the format, sender key or authentication tag is wrong.
   */
  open(sealed: Uint8Array, sender: string): Uint8Array {
    if (sealed.byteLength < HEADER_LEN + TAG_LEN) throw new InvalidRequestError("sealed message too short");
    for (let i = 0; i < XKV1.length; i++) {
      if (sealed[i] !== XKV1[i]) throw new InvalidRequestError("not an xkv1 sealed message");
    }
    const nonce = sealed.subarray(XKV1.length, HEADER_LEN);
    try {
      return xsalsa20poly1305(this.#boxKey(sender), nonce).decrypt(sealed.subarray(HEADER_LEN));
    } catch (cause) {
      if (cause instanceof InvalidRequestError) throw cause;
      throw new InvalidRequestError("sealed message does not open", { cause });
    }
  }

  /** Public-only view for logs. */
  toJSON(): { publicKey: string } {
    return { publicKey: this.publicKey };
  }
}
