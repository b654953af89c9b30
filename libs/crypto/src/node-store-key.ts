import { InvalidKeyError } from "./errors.js";
import { toHex } from "./encoding.js";
import { blake3DeriveKey } from "./hash.js";

/** Length in bytes of the node unlock key (NUK) and the cluster unlock key (CUK). */
export const UNLOCK_KEY_BYTES = 32;

/** BLAKE3 `derive_key` context of {@link nodeStoreKey}: fixed forever, or every node store becomes unreadable. */
export const NODE_STORE_KEY_CONTEXT = "unibus 2026-12-04 node store key v1";

/**
 * Prefix of the derived key. nats-server re-parses the value substituted for
 * `$UNIBUS_JS_KEY` in its config, and would read a leading digit as a number:
 * the key must start with a letter and be alphanumeric.
 */
const KEY_PREFIX = "K";

/**
 * A cluster node's JetStream at-rest key: BLAKE3 derive_key over NUK ⊕ CUK,
 * rendered as `K` + 64 lowercase hex digits (the form nats-server's
 * `jetstream.key` accepts from the environment). The node keeps only the NUK
 * on disk and receives the CUK from the cluster at each boot, so a stolen disk
 * (NUK alone) or a compromised cluster (CUK alone) cannot open the store.
 *
 * @throws InvalidKeyError when either half is not exactly 32 bytes, or when
 * both halves are equal (their XOR would be all zeros: a key chosen by
 * neither secret).
 */
export function nodeStoreKey(nuk: Uint8Array, cuk: Uint8Array): string {
  if (nuk.byteLength !== UNLOCK_KEY_BYTES) throw new InvalidKeyError(`node unlock key must be ${UNLOCK_KEY_BYTES} bytes, got ${nuk.byteLength}`);
  if (cuk.byteLength !== UNLOCK_KEY_BYTES) throw new InvalidKeyError(`cluster unlock key must be ${UNLOCK_KEY_BYTES} bytes, got ${cuk.byteLength}`);
  const mixed = new Uint8Array(UNLOCK_KEY_BYTES);
  let diff = 0;
  for (let i = 0; i < UNLOCK_KEY_BYTES; i++) {
    mixed[i] = nuk[i]! ^ cuk[i]!;
    diff |= mixed[i]!;
  }
  // Equal halves mean a copied key, not two secrets: the store key would be a public constant.
  if (diff === 0) throw new InvalidKeyError("node and cluster unlock keys are equal");
  const key = blake3DeriveKey(NODE_STORE_KEY_CONTEXT, mixed);
  mixed.fill(0);
  return `${KEY_PREFIX}${toHex(key)}`;
}
