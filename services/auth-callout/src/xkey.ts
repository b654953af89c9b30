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
import { asBuffer, sodium } from "./sodium.js";

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

/**
 * XSalsa20-Poly1305 under a precomputed box key (`crypto_box_afternm`, which
 * is `crypto_secretbox`): output and input are `tag(16) ‖ ciphertext`.
 */
export interface SecretBox {
  /** `native` (libsodium through sodium-native) or `js` (@noble/ciphers). */
  readonly name: "native" | "js";
  /** A fresh random 24-byte nonce (libsodium's generator skips node's per-call overhead, ~3 µs). */
  nonce(): Uint8Array;
  seal(key: Uint8Array, nonce: Uint8Array, message: Uint8Array): Uint8Array;
  /** The plaintext, or undefined when the tag does not verify. */
  open(key: Uint8Array, nonce: Uint8Array, boxed: Uint8Array): Uint8Array | undefined;
}

/** Pure JS, runs everywhere: ~45 µs of a cached refusal's callout CPU went to it (1 KB open + 0.5 KB seal). */
export const jsSecretBox: SecretBox = {
  name: "js",
  nonce: () => randomBytes(NONCE_LEN),
  seal: (key, nonce, message) => xsalsa20poly1305(key, nonce).encrypt(message),
  open(key, nonce, boxed) {
    try {
      return xsalsa20poly1305(key, nonce).decrypt(boxed);
    } catch {
      return undefined;
    }
  },
};

/**
 * libsodium's box when sodium-native loads: ~2 µs per box instead of ~20.
 * Undefined elsewhere, and then {@link jsSecretBox} does the same bytes.
 */
export const nativeSecretBox: SecretBox | undefined = ((s) => {
  if (s === undefined) return undefined;
  return {
    name: "native",
    nonce() {
      const n = Buffer.allocUnsafe(NONCE_LEN);
      s.randombytes_buf(n);
      return n;
    },
    seal(key, nonce, message) {
      const out = Buffer.allocUnsafe(message.byteLength + TAG_LEN);
      s.crypto_secretbox_easy(out, asBuffer(message), asBuffer(nonce), asBuffer(key));
      return out;
    },
    open(key, nonce, boxed) {
      if (boxed.byteLength < TAG_LEN) return undefined;
      const out = Buffer.allocUnsafe(boxed.byteLength - TAG_LEN);
      try {
        return s.crypto_secretbox_open_easy(out, asBuffer(boxed), asBuffer(nonce), asBuffer(key)) ? out : undefined;
      } catch {
        return undefined;
      }
    },
  };
})(sodium);

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
  readonly #box: SecretBox;
  readonly #shared = new Map<string, Uint8Array>();
  /** The public curve key (`X…`) to put in the server's `auth_callout { xkey }`. */
  readonly publicKey: string;

  private constructor(secret: Uint8Array, box: SecretBox) {
    this.#secret = secret;
    this.#box = box;
    this.publicKey = encodeNkeyPublic(NkeyPrefix.curve, agreementPublicKey(secret));
  }

  /**
   * From a curve seed string (`SX…`), as written by `nsc`/`nk -gen x25519` or @nats-io/nkeys.
   *
   * @param box - the box implementation; default native when it loads, else JS (tests pin each).
   */
  static fromSeed(seed: string, box: SecretBox = nativeSecretBox ?? jsSecretBox): CalloutXkey {
    let decoded: { prefix: NkeyPrefix; seed: Uint8Array };
    try {
      decoded = decodeNkeySeed(seed);
    } catch (cause) {
      throw new CalloutConfigError("xkey seed is not a valid nkey seed", { cause });
    }
    if (decoded.prefix !== NkeyPrefix.curve) throw new CalloutConfigError("xkey seed is not a curve (SX…) seed");
    return new CalloutXkey(decoded.seed, box);
  }

  /** A fresh random curve key. */
  static generate(box: SecretBox = nativeSecretBox ?? jsSecretBox): CalloutXkey {
    return new CalloutXkey(randomBytes(32), box);
  }

  /** Which box implementation this key uses (`native` or `js`), for logs and benches. */
  get boxImplementation(): SecretBox["name"] {
    return this.#box.name;
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
    const nonce = this.#box.nonce();
    const boxed = this.#box.seal(this.#boxKey(recipient), nonce, message);
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
    const opened = this.#box.open(this.#boxKey(sender), nonce, sealed.subarray(HEADER_LEN));
    if (opened === undefined) throw new InvalidRequestError("sealed message does not open");
    return opened;
  }

  /** Public-only view for logs. */
  toJSON(): { publicKey: string } {
    return { publicKey: this.publicKey };
  }
}
