/**
 * Agreement-key rotation (contracts/specs/room-keys.md "What holds and what
 * does not"). Shares are sealed to a member's long-term X25519 key, so a key
 * stolen later opens every share ever sealed to it; a rotated key bounds that
 * to the epochs sealed after the rotation. The old secret is dropped: epochs
 * sealed to it become unreadable to this identity as well, which is the point.
 */
import { generateAgreementKeyPair } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import type { KeysApi } from "./api.js";

/** `identity` with a fresh X25519 agreement key pair; same principal and signing key. */
export function withNewAgreementKey(identity: Identity): Identity {
  const pair = generateAgreementKeyPair();
  return { ...identity, agreementPublicKey: pair.publicKey, agreementSecretKey: pair.secretKey };
}

/** Options of {@link rotateAgreementKey}. */
export interface RotateAgreementKeyOptions {
  /**
   * Stores the rotated identity (e.g. rewrites its 0600 file) before the new
   * key is registered: if registering then fails, the next `prepareRoomKeys`
   * registers the stored key, whereas the reverse order could register a key
   * whose secret was never stored.
   */
  persist?: (rotated: Identity) => Promise<void>;
}

/**
 * Gives `identity` a new agreement key, stores it (`persist`) and registers
 * its binding, signed by the identity key, with the keys service. The next
 * epoch any owner seals (the next membership change, or an owner's
 * `rekeyRoom`) seals to the new key; until then this identity cannot open
 * shares sealed to the old one. Returns the rotated identity.
 */
export async function rotateAgreementKey(client: { readonly keys: KeysApi }, identity: Identity, opts: RotateAgreementKeyOptions = {}): Promise<Identity> {
  const rotated = withNewAgreementKey(identity);
  await opts.persist?.(rotated);
  await client.keys.registerAgreementKey(rotated);
  return rotated;
}
