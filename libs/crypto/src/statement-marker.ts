/**
 * Domain separation between the two kinds of bytes a unibus identity key
 * signs: the connect nonce the NATS server chooses, and the statements the
 * identity makes (agreement-key binding, epoch statement, request envelope,
 * room frame, replica transcript).
 *
 * Threat: a server that sends a statement as its connect nonce would get the
 * identity's genuine signature over it (e.g. binding an agreement key the
 * server ground until its statement was valid UTF-8). Every statement
 * therefore starts with 0xFF, a byte that never occurs in UTF-8, so no string
 * the connect authenticator signs can equal one; and the authenticator signs
 * only nonces of the server's own shape (contracts/specs/identity-and-envelope.md).
 */

/** First byte of every statement an identity key signs; never valid in UTF-8. */
export const STATEMENT_MARKER = 0xff;

/** `0xFF ‖ bytes`: the signed form of a statement whose encoding starts with its domain label. */
export function markStatement(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + bytes.byteLength);
  out[0] = STATEMENT_MARKER;
  out.set(bytes, 1);
  return out;
}

/** True when `bytes` starts with {@link STATEMENT_MARKER}. */
export function isMarkedStatement(bytes: Uint8Array): boolean {
  return bytes.byteLength > 0 && bytes[0] === STATEMENT_MARKER;
}

/**
 * Connect nonces the authenticator signs: what nats-server sends (11 random
 * bytes as 15 base64url characters in 2.x), with room for a longer one. Any
 * other nonce is refused before a signature exists.
 */
export const CONNECT_NONCE_PATTERN = /^[A-Za-z0-9_-]{11,64}$/;

/** Thrown by the connect authenticator for a nonce that is not the server's format; nothing was signed. */
export class ConnectNonceError extends Error {
  /** Stable code: `connect_nonce_refused`. */
  readonly code = "connect_nonce_refused" as const;
  constructor(message = "connect nonce refused: not a nats-server nonce (base64url, 11-64 characters)") {
    super(message);
    this.name = "ConnectNonceError";
  }
}
