import { ErrorCode, ErrorReason, UnibusError, decodeBinaryFrame, encodeBinaryFrame } from "@unibus/contracts";
import type { ValidateFn } from "@unibus/contracts";
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { envelopeFromHeaders, EnvelopeHeader, publicKeyFromPrincipal, verifyEnvelope } from "@unibus/crypto";
import type { Envelope } from "@unibus/crypto";
import type { KV } from "@nats-io/kv";
import { JetStreamApiError, JetStreamApiCodes } from "@nats-io/jetstream";
import type { Logger } from "pino";
import { Access, BinaryReply, DEFAULT_MAX_PAYLOAD_BYTES } from "./definition.js";
import type { Caller, EndpointSpec, HandlerContext, Role } from "./definition.js";
import { ENVELOPE_WINDOW_MS } from "./buckets.js";
import { kvErrorCounter } from "./metrics.js";

/** The parts of an incoming message the pipeline reads. */
export interface IncomingRequest {
  readonly subject: string;
  readonly data: Uint8Array;
  /** Where the reply goes; a stored reply is only sent back to the signer's own inbox. */
  readonly reply?: string | undefined;
  readonly headers?: { get(name: string): string } | undefined;
}

/** Everything one endpoint's pipeline needs, prepared once at start. */
export interface EndpointPipeline {
  readonly name: string;
  readonly spec: EndpointSpec;
  readonly validateRequest: ValidateFn;
  readonly validateReply: ValidateFn;
  readonly nonces: KV | undefined;
  /** Service name, for the KV error counter. */
  readonly service?: string;
  readonly resolveRole: ((principal: string) => Promise<Role | null>) | undefined;
  readonly now: () => number;
  readonly logger: Logger;
}

/** Where the request got to, for the log line; filled as checks pass. */
export interface RequestTrace {
  principal?: string;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** One encoder for every reply: constructing one per request is work for nothing. */
const utf8Encoder = new TextEncoder();

function parseBody(data: Uint8Array): unknown {
  try {
    return JSON.parse(utf8.decode(data));
  } catch (err) {
    throw new UnibusError(ErrorCode.BadRequest, ErrorReason.MalformedJson, "request body is not valid JSON", { cause: err });
  }
}

async function verifyRequest(p: EndpointPipeline, msg: IncomingRequest, trace: RequestTrace): Promise<Envelope> {
  const get = (name: string): string => msg.headers?.get(name) ?? "";
  if (get(EnvelopeHeader.signer) === "" || get(EnvelopeHeader.signature) === "") {
    throw new UnibusError(ErrorCode.Unauthorized, ErrorReason.SignatureMissing, "request must carry a signed envelope");
  }
  const envelope = envelopeFromHeaders(get);
  if (envelope === undefined) {
    throw new UnibusError(ErrorCode.Unauthorized, ErrorReason.SignatureInvalid, "request signature is invalid");
  }
  // The window is checked before the signature: a stale request is rejected
  // either way, and Ed25519 verification (70-180 µs here) is the costliest
  // step, so replayed old traffic must not buy it.
  if (Math.abs(p.now() - envelope.timestamp) > ENVELOPE_WINDOW_MS) {
    throw new UnibusError(ErrorCode.Unauthorized, ErrorReason.TimestampOutOfWindow, `request timestamp is more than ${ENVELOPE_WINDOW_MS / 1000} s from server time`);
  }
  // Signature over the subject the message actually arrived on, so a request
  // signed for one endpoint cannot be replayed against another.
  if (!verifyEnvelope(envelope, msg.subject, msg.data)) {
    throw new UnibusError(ErrorCode.Unauthorized, ErrorReason.SignatureInvalid, "request signature is invalid");
  }
  trace.principal = envelope.signer;
  return envelope;
}

async function resolveCaller(p: EndpointPipeline, envelope: Envelope): Promise<Caller> {
  const publicKey = publicKeyFromPrincipal(envelope.signer);
  if (p.spec.access === Access.Signed && p.resolveRole === undefined) {
    return { anonymous: false, principal: envelope.signer, publicKey };
  }
  let role: Role | null;
  try {
    role = p.resolveRole === undefined ? null : await p.resolveRole(envelope.signer);
  } catch (err) {
    // A damaged users record is answered as such (500, still a denial); anything else means the store is unreachable.
    if (err instanceof UnibusError && err.reason === ErrorReason.CorruptRecord) throw err;
    throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
  }
  // Admin endpoints deny by default: no role, an unknown role, or no resolver.
  if (p.spec.access === Access.Admin && role !== "admin") {
    throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "admin role required");
  }
  return role === null
    ? { anonymous: false, principal: envelope.signer, publicKey }
    : { anonymous: false, principal: envelope.signer, publicKey, role };
}

/**
 * What the `nonces` bucket holds per `<signer>.<nonce>`: the hash of the
 * signed request and, once it was handled, its outcome. A repeat of the very
 * same signed request (a client resending after its connection dropped) gets
 * the stored outcome instead of running the mutation twice.
 */
interface NonceRecord {
  /** sha256 over subject, timestamp and body: the bytes the signature covers besides signer and nonce. */
  h: string;
  /** The first request's outcome: the reply bytes (base64) or the error reply. */
  ok?: string;
  err?: { code: number; reason: string; message: string; details?: Record<string, unknown> };
}

/** How long a repeat waits for the first request's outcome before answering 409 `in_progress`. */
const IN_PROGRESS_WAIT_MS = 2_000;
const IN_PROGRESS_POLL_MS = 20;

function requestHash(subject: string, envelope: Envelope, data: Uint8Array): string {
  const h = createHash("sha256");
  for (const part of [subject, String(envelope.timestamp)]) h.update(`${Buffer.byteLength(part)}:${part}`);
  h.update(data);
  return h.digest("hex");
}

function replayed(cause?: unknown): UnibusError {
  return new UnibusError(ErrorCode.Unauthorized, ErrorReason.NonceReplayed, "request nonce was already used", cause === undefined ? {} : { cause });
}

function parseRecord(value: string): NonceRecord | null {
  try {
    const r = JSON.parse(value) as unknown;
    if (typeof r !== "object" || r === null || typeof (r as NonceRecord).h !== "string") return null;
    return r as NonceRecord;
  } catch {
    return null;
  }
}

/** The stored outcome as this pipeline's result: the reply bytes, or the stored error thrown again. */
function outcomeOf(record: NonceRecord): Uint8Array | null {
  if (record.ok !== undefined) return new Uint8Array(Buffer.from(record.ok, "base64"));
  if (record.err !== undefined) {
    const { code, reason, message, details } = record.err;
    throw new UnibusError(code as ErrorCode, reason, message, details === undefined ? {} : { details });
  }
  return null;
}

/**
 * Answers a request whose nonce is already recorded. Only the exact same
 * signed request (same signer, nonce, subject, timestamp, body: only the
 * signer can produce its signature) going back to the signer's own inbox gets
 * the first outcome; anything else is a replay. The inbox check keeps an
 * eavesdropper who captured a signed request from collecting its reply.
 */
async function answerRepeat(p: EndpointPipeline, key: string, hash: string, envelope: Envelope, msg: IncomingRequest, cause: unknown): Promise<Uint8Array> {
  if (msg.reply === undefined || !msg.reply.startsWith(`_INBOX.${envelope.signer}.`)) throw replayed(cause);
  const deadline = p.now() + IN_PROGRESS_WAIT_MS;
  for (;;) {
    let record: NonceRecord | null;
    try {
      const entry = await (p.nonces as KV).get(key);
      record = entry === null || entry.operation !== "PUT" ? null : parseRecord(entry.string());
    } catch (err) {
      kvErrorCounter.inc({ service: p.service ?? "", op: "nonce_get" });
      throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
    }
    // No record (expired meanwhile) or one we cannot read: fail closed.
    if (record === null || record.h !== hash) throw replayed(cause);
    const outcome = outcomeOf(record);
    if (outcome !== null) return outcome;
    if (p.now() >= deadline) {
      throw new UnibusError(ErrorCode.Conflict, ErrorReason.InProgress, "the first request with this nonce is still being handled; resend it", { details: { retryAfterMs: 250 } });
    }
    await sleep(IN_PROGRESS_POLL_MS);
  }
}

/**
 * Claims the nonce of a mutating request and runs `run` once, recording its
 * outcome under the nonce; a repeat gets that outcome (see {@link answerRepeat}).
 */
async function runOnce(p: EndpointPipeline, envelope: Envelope, msg: IncomingRequest, run: () => Promise<Uint8Array>): Promise<Uint8Array> {
  if (p.nonces === undefined) {
    throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable");
  }
  const key = `${envelope.signer}.${envelope.nonce}`;
  const hash = requestHash(msg.subject, envelope, msg.data);
  // kv.create succeeds only for a key never written (or deleted/expired), so
  // the nonce store and the replay check are one atomic step on the server.
  // A replay is 401 like the other envelope failures: the envelope is not
  // fresh, and 409 stays free for conflicts with stored state.
  let revision: number;
  try {
    revision = await p.nonces.create(key, JSON.stringify({ h: hash } satisfies NonceRecord));
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence) {
      return answerRepeat(p, key, hash, envelope, msg, err);
    }
    kvErrorCounter.inc({ service: p.service ?? "", op: "nonce_create" });
    throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
  }
  const record: NonceRecord = { h: hash };
  try {
    const data = await run();
    record.ok = Buffer.from(data).toString("base64");
    return data;
  } catch (err) {
    const failure = err instanceof UnibusError ? err : new UnibusError(ErrorCode.Internal, ErrorReason.Internal, "internal error", { cause: err });
    record.err = failure.toReply().error;
    throw failure;
  } finally {
    try {
      await p.nonces.update(key, JSON.stringify(record), revision);
    } catch (err) {
      // The record stays "in progress": a repeat gets 409 until it expires,
      // never a second run of the mutation.
      kvErrorCounter.inc({ service: p.service ?? "", op: "nonce_update" });
      p.logger.warn({ err: err instanceof Error ? err.message : String(err) }, "request outcome not recorded");
    }
  }
}

/**
 * Runs every check of architecture §4 in order (size → JSON → request schema →
 * envelope → freshness → nonce → role), then the handler, then validates its
 * reply. A mutating request's outcome is recorded under its nonce, so the
 * same signed request sent again gets the first outcome back. Returns the reply body; throws a `UnibusError` for an error reply, or
 * anything else for a generic 500. The handler is never called when a check
 * fails.
 */
export async function runPipeline(p: EndpointPipeline, msg: IncomingRequest, trace: RequestTrace): Promise<Uint8Array> {
  const limit = p.spec.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
  if (msg.data.byteLength > limit) {
    throw new UnibusError(ErrorCode.PayloadTooLarge, ErrorReason.PayloadTooLarge, `request body exceeds ${limit} bytes`, { details: { limit } });
  }
  let json = msg.data;
  let payload: Uint8Array = new Uint8Array(0);
  if (p.spec.binary === true) {
    const frame = decodeBinaryFrame(msg.data);
    if (frame === null) throw new UnibusError(ErrorCode.BadRequest, ErrorReason.MalformedJson, "request body is not a valid binary frame");
    json = frame.json;
    payload = frame.payload;
  }
  const body = parseBody(json);
  const checked = p.validateRequest(body);
  if (!checked.ok) {
    throw new UnibusError(ErrorCode.BadRequest, ErrorReason.SchemaViolation, `request field ${checked.path}: ${checked.message}`, { details: { path: checked.path } });
  }
  // A handshake endpoint proves its caller itself (MACs, single-use nonces);
  // the size, JSON and schema checks above still apply to it.
  if (p.spec.access === Access.Public || p.spec.access === Access.Handshake) return handle(p, msg, body, payload, { anonymous: true }, trace);
  const envelope = await verifyRequest(p, msg, trace);
  if (!p.spec.mutates) return handle(p, msg, body, payload, await resolveCaller(p, envelope), trace, envelope);
  return runOnce(p, envelope, msg, async () => handle(p, msg, body, payload, await resolveCaller(p, envelope), trace, envelope));
}

async function handle(p: EndpointPipeline, msg: IncomingRequest, body: unknown, payload: Uint8Array, caller: Caller, trace: RequestTrace, envelope?: Envelope): Promise<Uint8Array> {
  const logger = trace.principal === undefined ? p.logger : p.logger.child({ principal: trace.principal });
  const ctx: HandlerContext = envelope === undefined ? { subject: msg.subject, logger, now: p.now, payload, body: msg.data } : { subject: msg.subject, logger, now: p.now, payload, body: msg.data, envelope };
  const result = await p.spec.handler(body, caller, ctx);
  const binary = result instanceof BinaryReply;
  if (binary && p.spec.binary !== true) throw new Error(`endpoint ${p.name} returned a binary reply but is not binary`);
  const reply: unknown = binary ? result.reply : result;
  const replyChecked = p.validateReply(reply);
  if (!replyChecked.ok) {
    // A reply outside its contract is a bug in the service, not in the request.
    throw new Error(`reply violates ${p.spec.reply} at ${replyChecked.path}: ${replyChecked.message}`);
  }
  if (p.spec.binary === true) return encodeBinaryFrame(reply, binary ? result.payload : undefined);
  return utf8Encoder.encode(JSON.stringify(reply));
}
