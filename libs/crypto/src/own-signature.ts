// Shared by ./ed25519.ts and its browser sibling (./ed25519.browser.ts).
import { constantTimeEqual } from "./encoding.js";

/**
 * True when `signature` is exactly what `sign` makes over `data`, compared
 * in constant time; the signature made here is zeroed and never leaves the
 * call. Ed25519 signing is deterministic, so for a signing key this is "the
 * key's own signature": one that verifies. Never throws.
 */
export function isSignatureMadeBy(sign: (data: Uint8Array) => Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  try {
    if (!(data instanceof Uint8Array) || !(signature instanceof Uint8Array) || signature.byteLength !== 64) return false;
    const mine = sign(data);
    try {
      return constantTimeEqual(mine, signature);
    } finally {
      mine.fill(0);
    }
  } catch {
    return false;
  }
}
