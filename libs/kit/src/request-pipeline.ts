import { ErrorCode, ErrorReason, UnibusError, decodeBinaryFrame, encodeBinaryFrame } from "@unibus/contracts";
import type { ValidateFn } from "@unibus/contracts";
import { envelopeFromHeaders, EnvelopeHeader, publicKeyFromPrincipal, verifyEnvelope } from "@unibus/crypto";
import type { KV } from "@nats-io/kv";
import { JetStreamApiError, JetStreamApiCodes } from "@nats-io/jetstream";
import type { Logger } from "pino";
import { Access, BinaryReply, DEFAULT_MAX_PAYLOAD_BYTES } from "./definition.js";
import type { Caller, EndpointSpec, Role } from "./definition.js";
import { ENVELOPE_WINDOW_MS } from "./buckets.js";

/** The parts of an incoming message the pipeline reads. */
export interface IncomingRequest {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers?: { get(name: string): string } | undefined;
}

/** Everything one endpoint's pipeline needs, prepared once at start. */
export interface EndpointPipeline {
  readonly name: string;
  readonly spec: EndpointSpec;
  readonly validateRequest: ValidateFn;
  readonly validateReply: ValidateFn;
  readonly nonces: KV | undefined;
  readonly resolveRole: ((principal: string) => Promise<Role | null>) | undefined;
  readonly now: () => number;
  readonly logger: Logger;
}

/** Where the request got to, for the log line; filled as checks pass. */
export interface RequestTrace {
  principal?: string;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function parseBody(data: Uint8Array): unknown {
  try {
    return JSON.parse(utf8.decode(data));
  } catch (err) {
    throw new UnibusError(ErrorCode.BadRequest, ErrorReason.MalformedJson, "request body is not valid JSON", { cause: err });
  }
}

async function authenticate(p: EndpointPipeline, msg: IncomingRequest, trace: RequestTrace): Promise<Caller> {
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
  if (p.spec.mutates) {
    if (p.nonces === undefined) {
      throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable");
    }
    // kv.create succeeds only for a key never written (or deleted/expired), so
    // the nonce store and the replay check are one atomic step on the server.
    // A replay is 401 like the other envelope failures: the envelope is not
    // fresh, and 409 stays free for conflicts with stored state.
    try {
      await p.nonces.create(`${envelope.signer}.${envelope.nonce}`, String(envelope.timestamp));
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence) {
        throw new UnibusError(ErrorCode.Unauthorized, ErrorReason.NonceReplayed, "request nonce was already used", { cause: err });
      }
      throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
    }
  }
  const publicKey = publicKeyFromPrincipal(envelope.signer);
  if (p.spec.access === Access.Signed && p.resolveRole === undefined) {
    return { anonymous: false, principal: envelope.signer, publicKey };
  }
  let role: Role | null;
  try {
    role = p.resolveRole === undefined ? null : await p.resolveRole(envelope.signer);
  } catch (err) {
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
 * Runs every check of DESIGN §4 in order (size → JSON → request schema →
 * envelope → freshness → nonce → role), then the handler, then validates its
 * reply. Returns the reply body; throws a `UnibusError` for an error reply, or
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
  const caller: Caller = p.spec.access === Access.Public || p.spec.access === Access.Handshake ? { anonymous: true } : await authenticate(p, msg, trace);
  const logger = trace.principal === undefined ? p.logger : p.logger.child({ principal: trace.principal });
  const result = await p.spec.handler(body, caller, { subject: msg.subject, logger, now: p.now, payload });
  const binary = result instanceof BinaryReply;
  if (binary && p.spec.binary !== true) throw new Error(`endpoint ${p.name} returned a binary reply but is not binary`);
  const reply: unknown = binary ? result.reply : result;
  const replyChecked = p.validateReply(reply);
  if (!replyChecked.ok) {
    // A reply outside its contract is a bug in the service, not in the request.
    throw new Error(`reply violates ${p.spec.reply} at ${replyChecked.path}: ${replyChecked.message}`);
  }
  if (p.spec.binary === true) return encodeBinaryFrame(reply, binary ? result.payload : undefined);
  return new TextEncoder().encode(JSON.stringify(reply));
}
