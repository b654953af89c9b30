import type { ErrorReply } from "./generated/types.js";

/** Status codes a unibus reply can carry, HTTP-like so operators read them at a glance. */
export const ErrorCode = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  Conflict: 409,
  PayloadTooLarge: 413,
  TooManyRequests: 429,
  Internal: 500,
  Unavailable: 503,
} as const;
/** One of the {@link ErrorCode} values. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * Stable machine-readable reasons. Clients branch on these, so a reason is never
 * renamed; new ones may be added.
 */
export const ErrorReason = {
  MalformedJson: "malformed_json",
  SchemaViolation: "schema_violation",
  PayloadTooLarge: "payload_too_large",
  SignatureMissing: "signature_missing",
  SignatureInvalid: "signature_invalid",
  TimestampOutOfWindow: "timestamp_out_of_window",
  NonceReplayed: "nonce_replayed",
  Forbidden: "forbidden",
  NotFound: "not_found",
  Conflict: "conflict",
  TooManyRequests: "too_many_requests",
  Unavailable: "unavailable",
  Internal: "internal",
  MalformedReply: "malformed_reply",
  /** The connection dropped while the request was in flight: it may or may not have been applied. */
  ConnectionLost: "connection_lost",
  /** A request with this nonce and body is still being handled; resend the same request shortly. */
  InProgress: "in_progress",
  /** A stored record is not what its schema says: the service refuses to act on it (500, fail closed). */
  CorruptRecord: "corrupt_record",
} as const;
/** One of the {@link ErrorReason} values, or a service-specific reason string. */
export type ErrorReason = (typeof ErrorReason)[keyof typeof ErrorReason];

/** Structured, caller-safe extra information on an error (see contracts/schemas/common/error.json). */
export type ErrorDetails = NonNullable<ErrorReply["error"]["details"]>;

/** Micro protocol header carrying the numeric error code. */
export const ServiceErrorCodeHeader = "Nats-Service-Error-Code";
/** Micro protocol header carrying the error description. */
export const ServiceErrorHeader = "Nats-Service-Error";

const defaultReason: Record<ErrorCode, string> = {
  400: ErrorReason.SchemaViolation,
  401: ErrorReason.SignatureInvalid,
  403: ErrorReason.Forbidden,
  404: ErrorReason.NotFound,
  409: ErrorReason.Conflict,
  413: ErrorReason.PayloadTooLarge,
  429: ErrorReason.TooManyRequests,
  500: ErrorReason.Internal,
  503: ErrorReason.Unavailable,
};

/** Options of {@link UnibusError}. */
export interface UnibusErrorOptions {
  /** Extra caller-safe facts, e.g. the offending field path. */
  details?: ErrorDetails;
  /** The underlying error; logged, never sent to the caller. */
  cause?: unknown;
}

/**
 * The one error family of unibus. `message` is shown to the caller, so it must
 * never carry internal detail (keys, store errors, stack traces): put those in
 * `cause`, which only reaches the log.
 */
export class UnibusError extends Error {
  /** Status code sent on the wire. */
  readonly code: ErrorCode;
  /** Stable machine-readable reason. */
  readonly reason: string;
  /** Caller-safe structured detail. */
  readonly details?: ErrorDetails;

  constructor(code: ErrorCode, reason: string, message: string, options: UnibusErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "UnibusError";
    this.code = code;
    this.reason = reason;
    if (options.details !== undefined) this.details = options.details;
  }

  /** The JSON body of this error's reply. */
  toReply(): ErrorReply {
    const error: ErrorReply["error"] = { code: this.code, reason: this.reason, message: this.message };
    if (this.details !== undefined) error.details = this.details;
    return { error };
  }
}

const knownCodes = new Set<number>(Object.values(ErrorCode));

/** True if `code` is one of the {@link ErrorCode} values. */
export function isErrorCode(code: number): code is ErrorCode {
  return knownCodes.has(code);
}

// Header values end at a line break on the wire; a message must not be able to
// inject another header.
function headerSafe(text: string): string {
  return text.replace(/[\r\n]+/g, " ").slice(0, 512);
}

/** An error reply ready to publish: micro error headers plus the JSON body. */
export interface EncodedErrorReply {
  /** Header name → value; copy into the transport's header object. */
  headers: Readonly<Record<string, string>>;
  data: Uint8Array;
}

/**
 * The parts of a received message {@link decodeReply} reads; a nats.js `Msg`
 * fits, and contracts stays free of any transport dependency.
 */
export interface ReplyMessage {
  readonly data: Uint8Array;
  readonly headers?: { get(name: string): string } | undefined;
}

/**
 * Encodes an error the micro way (`Nats-Service-Error-Code` / `Nats-Service-Error`
 * headers, so `nats micro` and other micro clients see it) and as a JSON body
 * `{"error":{code,reason,message}}` for unibus clients.
 */
export function encodeErrorReply(err: UnibusError): EncodedErrorReply {
  return {
    headers: {
      [ServiceErrorCodeHeader]: String(err.code),
      [ServiceErrorHeader]: headerSafe(`${err.reason}: ${err.message}`),
    },
    data: new TextEncoder().encode(JSON.stringify(err.toReply())),
  };
}

function errorFromBody(value: unknown): UnibusError | null {
  if (value === null || typeof value !== "object" || !("error" in value)) return null;
  const e = (value).error;
  if (e === null || typeof e !== "object") return null;
  const { code, reason, message, details } = e as Record<string, unknown>;
  if (typeof code !== "number" || !isErrorCode(code)) return null;
  return new UnibusError(
    code,
    typeof reason === "string" ? reason : defaultReason[code],
    typeof message === "string" ? message : "request failed",
    details !== null && typeof details === "object" ? { details: details } : {},
  );
}

/**
 * Decodes a reply for a client: returns the JSON body, or throws the
 * {@link UnibusError} the service sent. A reply carrying only micro error
 * headers (e.g. from a non-unibus micro service) also throws.
 *
 * @throws UnibusError on an error reply, or with reason `malformed_reply` if a
 *   success reply is not JSON.
 */
export function decodeReply<T = unknown>(msg: ReplyMessage): T {
  const headerCode = msg.headers?.get(ServiceErrorCodeHeader) ?? "";
  let body: unknown = undefined;
  let parsed = false;
  try {
    body = msg.data.length === 0 ? undefined : JSON.parse(new TextDecoder().decode(msg.data));
    parsed = true;
  } catch {
    parsed = false;
  }
  if (headerCode !== "") {
    const fromBody = parsed ? errorFromBody(body) : null;
    if (fromBody !== null) throw fromBody;
    const n = Number.parseInt(headerCode, 10);
    const code: ErrorCode = isErrorCode(n) ? n : ErrorCode.Internal;
    const description = msg.headers?.get(ServiceErrorHeader) ?? "";
    throw new UnibusError(code, defaultReason[code], description || "request failed");
  }
  if (!parsed) {
    throw new UnibusError(ErrorCode.Internal, ErrorReason.MalformedReply, "reply is not valid JSON");
  }
  const fromBody = errorFromBody(body);
  if (fromBody !== null) throw fromBody;
  return body as T;
}

/** The coded error a reply carries, or null for a success: what {@link decodeReply} would throw, as a value. */
export function replyError(msg: ReplyMessage): UnibusError | null {
  try {
    decodeReply(msg);
    return null;
  } catch (err) {
    if (err instanceof UnibusError) return err;
    throw err;
  }
}
