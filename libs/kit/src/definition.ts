import type { Envelope } from "@unibus/crypto";
import type { Logger } from "pino";
import type { JsonSchema, SchemaTypes } from "@unibus/contracts";
import type { RawEndpointSpec } from "./raw-endpoint.js";

/** Who may call an endpoint. */
export const Access = {
  /** Anyone connected; no envelope is checked. Such an endpoint may not mutate. */
  Public: "public",
  /** Any caller with a valid signed envelope; the handler authorizes further. */
  Signed: "signed",
  /** A signed caller whose role `resolveRole` reports as "admin"; everyone else is denied. */
  Admin: "admin",
  /**
   * Anyone connected, no envelope, and it may mutate: only for a protocol that
   * authenticates itself and carries its own single-use nonces (the replica PSK
   * handshake, which a node runs before it has any allowlisted identity).
   */
  Handshake: "handshake",
} as const;
/** One of the {@link Access} values. */
export type Access = (typeof Access)[keyof typeof Access];

/** Principal kinds of architecture §3, as resolved by {@link KitDeps.resolveRole}. */
export type Role = "admin" | "member" | "node" | `service:${string}`;

/** A caller proven by a signed envelope. */
export interface SignedCaller {
  readonly anonymous: false;
  /** The signer's principal (`U…` user nkey). */
  readonly principal: string;
  /** The signer's raw Ed25519 public key. */
  readonly publicKey: Uint8Array;
  /** The role, when the service resolves roles and the principal has one. */
  readonly role?: Role;
}

/** The caller of a public or handshake endpoint: nothing about it is proven. */
export interface AnonymousCaller {
  readonly anonymous: true;
}

/** Who sent a request, as far as the kit could prove it. */
export type Caller = SignedCaller | AnonymousCaller;

/** What a handler gets besides the request and the caller. */
export interface HandlerContext {
  /** The subject the request arrived on. */
  readonly subject: string;
  /** Logger bound to the service and operation (`svc`, `op`, `principal`). */
  readonly logger: Logger;
  /** The kit's clock, unix ms (tests inject one through {@link KitDeps.now}). */
  now(): number;
  /** The raw payload of a {@link EndpointSpec.binary} request; empty for JSON endpoints. */
  readonly payload: Uint8Array;
  /** The verified signed envelope of the request (absent for public and handshake endpoints). */
  readonly envelope?: Envelope;
  /** The request body bytes exactly as signed: a service that records who asked for what keeps these. */
  readonly body: Uint8Array;
}

/**
 * What a {@link EndpointSpec.binary} handler returns to send raw bytes after
 * its JSON reply (built with {@link binaryReply}); the JSON part is still
 * validated against the reply schema.
 */
export class BinaryReply<T = unknown> {
  constructor(
    readonly reply: T,
    readonly payload: Uint8Array,
  ) {}
}

/** A reply of a binary endpoint: `reply` (schema-checked JSON) followed by raw `payload`. */
export function binaryReply<T>(reply: T, payload: Uint8Array): BinaryReply<T> {
  return new BinaryReply(reply, payload);
}

/**
 * One endpoint. The kit runs the handler only for a request that passed every
 * check (size, JSON, schema, envelope, freshness, nonce, role), and validates
 * what the handler returns against `reply` before sending it.
 */
export interface EndpointSpec<TReq = unknown, TRep = unknown> {
  /** Subject the endpoint listens on (a constant from `Subjects`). */
  readonly subject: string;
  /** Schema id of the request body. */
  readonly request: string;
  /** Schema id of the reply body. */
  readonly reply: string;
  /** A mutating request's nonce is recorded, so a replay is rejected. */
  readonly mutates: boolean;
  /** Who may call; see {@link Access}. */
  readonly access: Access;
  /** Largest accepted request body in bytes; default {@link DEFAULT_MAX_PAYLOAD_BYTES}. */
  readonly maxPayloadBytes?: number;
  /**
   * Request and reply bodies are binary frames (`encodeBinaryFrame` in
   * contracts): JSON for the schema, then raw bytes in `ctx.payload`. The
   * envelope signature covers the whole frame. Used for blob chunks, where
   * base64 in JSON would cost a third more bytes and a copy each way.
   */
  readonly binary?: boolean;
  /** Business logic. Throw a `UnibusError` to send a coded error; anything else becomes a generic 500. */
  handler(req: TReq, caller: Caller, ctx: HandlerContext): Promise<TRep | BinaryReply<TRep>>;
}

/** A micro service: its identity and endpoints, keyed by micro endpoint name. */
export interface ServiceDefinition {
  /** Micro service name (`ServiceName`). */
  readonly name: string;
  /** Semantic version, usually the package version. */
  readonly version: string;
  readonly description: string;
  /** Extra service metadata for `$SRV.INFO`. */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Endpoints by micro endpoint name (letters, digits, `-`, `_`). */
  readonly endpoints: Readonly<Record<string, EndpointSpec>>;
  /** Endpoints that speak another protocol than the kit's envelope (the auth callout), by micro endpoint name. */
  readonly raw?: Readonly<Record<string, RawEndpointSpec>>;
  /** Schemas beyond the contract set (tests); ids must not collide with contract ids. */
  readonly schemas?: Readonly<Record<string, JsonSchema>>;
}

/** Default request body limit: 64 KiB. Control-plane requests are small; blobs have their own path. */
export const DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024;

/** Raised when a service definition is unsafe or malformed; a programming error caught at start. */
export class ServiceDefinitionError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ServiceDefinitionError";
  }
}

const MICRO_NAME = /^[-\w]+$/;
const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;

/**
 * Checks and freezes a service definition. A public endpoint may not mutate:
 * an unauthenticated mutation has no signer to hold to account and no nonce to
 * stop a replay (architecture §1.2, fail closed).
 *
 * @throws ServiceDefinitionError
 */
export function defineService<D extends ServiceDefinition>(definition: D): D {
  if (!MICRO_NAME.test(definition.name)) throw new ServiceDefinitionError(`invalid service name: ${definition.name}`);
  if (!SEMVER.test(definition.version)) throw new ServiceDefinitionError(`service ${definition.name}: version must be semver, got ${definition.version}`);
  const subjects = new Set<string>();
  for (const [name, spec] of Object.entries(definition.endpoints)) {
    const where = `service ${definition.name} endpoint ${name}`;
    if (!MICRO_NAME.test(name)) throw new ServiceDefinitionError(`${where}: invalid endpoint name`);
    if (!Object.values(Access).includes(spec.access)) throw new ServiceDefinitionError(`${where}: unknown access ${String(spec.access)}`);
    if (spec.access === Access.Public && spec.mutates) throw new ServiceDefinitionError(`${where}: a public endpoint cannot mutate`);
    if (spec.subject === "" || /[\s*>]/.test(spec.subject)) throw new ServiceDefinitionError(`${where}: subject must be literal`);
    if (subjects.has(spec.subject)) throw new ServiceDefinitionError(`${where}: subject ${spec.subject} used twice`);
    subjects.add(spec.subject);
    const limit = spec.maxPayloadBytes;
    if (limit !== undefined && (!Number.isSafeInteger(limit) || limit <= 0)) throw new ServiceDefinitionError(`${where}: maxPayloadBytes must be a positive integer`);
  }
  for (const [name, spec] of Object.entries(definition.raw ?? {})) {
    const where = `service ${definition.name} raw endpoint ${name}`;
    if (!MICRO_NAME.test(name) || name in definition.endpoints) throw new ServiceDefinitionError(`${where}: invalid or repeated endpoint name`);
    if (spec.subject === "" || /[\s*>]/.test(spec.subject)) throw new ServiceDefinitionError(`${where}: subject must be literal`);
    if (subjects.has(spec.subject)) throw new ServiceDefinitionError(`${where}: subject ${spec.subject} used twice`);
    subjects.add(spec.subject);
    // An empty prefix would answer any reply subject with the service's rights.
    if (spec.replyPrefix === "") throw new ServiceDefinitionError(`${where}: replyPrefix must name the protocol's reply subjects`);
  }
  const raw = definition.raw === undefined ? {} : { raw: Object.freeze({ ...definition.raw }) };
  return Object.freeze({ ...definition, endpoints: Object.freeze({ ...definition.endpoints }), ...raw });
}

/** The typed endpoint spec `endpointFor` accepts: request/reply types follow from the schema ids. */
export type TypedEndpointSpec<T, Q extends keyof T & string, P extends keyof T & string> = Omit<EndpointSpec<T[Q], T[P]>, "request" | "reply"> & {
  readonly request: Q;
  readonly reply: P;
};

/**
 * Returns an `endpoint()` builder typed by a schema-id → type map, so a handler's
 * request and reply types follow from the schema ids it names.
 */
export function endpointFor<T>(): <Q extends keyof T & string, P extends keyof T & string>(
  spec: TypedEndpointSpec<T, Q, P>,
) => EndpointSpec<T[Q], T[P]> {
  return (spec) => spec;
}

/** Builds an endpoint typed by the contract schemas (`SchemaTypes`). */
export const endpoint = endpointFor<SchemaTypes>();
