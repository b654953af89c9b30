/**
 * A callout request that is malformed, forged, expired or encrypted with the
 * wrong key. The message is for logs; the client only ever sees a denial.
 */
export class InvalidRequestError extends Error {
  constructor(message = "invalid authorization request", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "InvalidRequestError";
  }
}

/** The service and the server disagree on encryption (one uses an xkey, the other not). */
export class EncryptionMismatchError extends Error {
  constructor(message = "callout encryption configuration mismatch", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "EncryptionMismatchError";
  }
}

/** The principal directory could not answer (KV unreachable, corrupt record). Logins fail closed. */
export class DirectoryError extends Error {
  constructor(message = "principal directory unavailable", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DirectoryError";
  }
}

/** Service configuration (keys, files, environment) is missing or wrong. */
export class CalloutConfigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CalloutConfigError";
  }
}
