import { randomBytes } from "./encoding.js";
import { InvalidKeyError } from "./errors.js";
import { NkeyPrefix, decodeNkeySeed, encodeNkeyPublic, encodeNkeySeed } from "./nkey.js";
import { agreementPublicKey } from "./x25519.js";

/** A fresh curve (`SX…`) nkey seed, the kind nats-server's auth callout encrypts to. A secret: 0600 files only. */
export function newCurveSeed(): string {
  return encodeNkeySeed(NkeyPrefix.curve, randomBytes(32));
}

/**
 * The `X…` public key of a curve seed, for the server config.
 *
 * @throws InvalidKeyError for anything but a valid `SX…` seed (the message never includes the seed).
 */
export function curvePublicKey(seed: string): string {
  const decoded = decodeNkeySeed(seed);
  if (decoded.prefix !== NkeyPrefix.curve) throw new InvalidKeyError("not a curve (SX…) seed");
  return encodeNkeyPublic(NkeyPrefix.curve, agreementPublicKey(decoded.seed));
}
