/**
 * Thrown when authenticated decryption fails: wrong key, tampered ciphertext,
 * tag or associated data, truncated input, or a malformed sealed box.
 *
 * The message never says which check failed, so a caller that echoes it cannot
 * become a decryption oracle.
 */
export class DecryptError extends Error {
  constructor(message = "decryption failed", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DecryptError";
  }
}

/** Thrown when a string is neither a `U…` user nkey nor a 64-hex Ed25519 public key. */
export class InvalidPrincipalError extends Error {
  constructor(message = "invalid principal", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "InvalidPrincipalError";
  }
}

/** Thrown when key material has the wrong length, prefix, checksum or kind. */
export class InvalidKeyError extends Error {
  constructor(message = "invalid key", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "InvalidKeyError";
  }
}

/** Thrown by the strict hex / base64url decoders on malformed input. */
export class EncodingError extends Error {
  constructor(message = "invalid encoding", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "EncodingError";
  }
}
