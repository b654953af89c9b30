import type { Envelope } from "@unibus/crypto";
import type { Logger } from "pino";
import { EndpointAccess, EndpointCatalogue, endpointSchemaIds, endpointSubject, microEndpointName } from "@unibus/contracts";
import type { CatalogueEntry, CatalogueService, EndpointName, JsonSchema, SchemaTypes } from "@unibus/contracts";
import type { RawEndpointSpec } from "./raw-endpoint.js";

/**
 * Who may call an endpoint: the contract's {@link EndpointAccess}, under the
 * name services use.
 */
export const Access = EndpointAccess;
/** One of the {@link Access} values. */
export type Access = EndpointAccess;

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

/** The request body type of catalogued endpoint `N` of service `S`. */
export type RequestOf<S extends CatalogueService, N extends EndpointName<S>> = `${S}.${N}.request` extends keyof SchemaTypes ? SchemaTypes[`${S}.${N}.request`] : never;
/** The reply body type of catalogued endpoint `N` of service `S`. */
export type ReplyOf<S extends CatalogueService, N extends EndpointName<S>> = `${S}.${N}.reply` extends keyof SchemaTypes ? SchemaTypes[`${S}.${N}.reply`] : never;

/** What a service implements of a catalogued endpoint: the handler and its request limit. */
export interface EndpointImpl<TReq = unknown, TRep = unknown> {
  /** Largest accepted request body in bytes; default {@link DEFAULT_MAX_PAYLOAD_BYTES}. */
  readonly maxPayloadBytes?: number;
  /** Request and reply bodies are binary frames; see {@link EndpointSpec.binary}. */
  readonly binary?: boolean;
  /** Business logic; see {@link EndpointSpec.handler}. */
  handler(req: TReq, caller: Caller, ctx: HandlerContext): Promise<TRep | BinaryReply<TRep>>;
}

/**
 * Types a handler by its catalogue name: the request and reply types follow
 * from the schemas `<service>.<name>.request|reply`. Nothing else is said
 * here: subject, schema ids, access and mutation come from the catalogue.
 */
export function handles<S extends CatalogueService, N extends EndpointName<S>>(_service: S, _name: N, impl: EndpointImpl<RequestOf<S, N>, ReplyOf<S, N>>): EndpointImpl<RequestOf<S, N>, ReplyOf<S, N>> {
  return impl;
}

type Entry<S extends CatalogueService, N extends EndpointName<S>> = EndpointCatalogue[S][N] extends CatalogueEntry ? EndpointCatalogue[S][N] : never;

/**
 * One row of a service's endpoint table: the access and mutation the
 * catalogue declares (restated so the table reads on its own; the type and
 * {@link endpointTable} refuse any other value) and the implementation.
 */
export interface EndpointRow<S extends CatalogueService, N extends EndpointName<S>> {
  readonly access: Entry<S, N>["access"];
  readonly mutates: Entry<S, N>["mutates"];
  readonly impl: EndpointImpl<RequestOf<S, N>, ReplyOf<S, N>>;
}

/** The catalogued endpoints of service `S` that speak the kit's JSON envelope (not `wire: "binary"`). */
export type JsonEndpointName<S extends CatalogueService> = { [N in EndpointName<S>]: EndpointCatalogue[S][N] extends { readonly wire: "binary" } ? never : N }[EndpointName<S>];

/** A service's endpoint table: one row per catalogued JSON endpoint of service `S`, every one present. */
export type EndpointTable<S extends CatalogueService> = { readonly [N in JsonEndpointName<S>]: EndpointRow<S, N> };

/** Options of {@link endpointTable}. */
export interface EndpointTableOptions {
  /** This instance's replica token: per-replica endpoints listen on `<subject>.<replica>`. */
  readonly replica?: string;
  /**
   * The table may leave catalogued endpoints out: for a service that serves
   * some of its endpoints only when configured for them (the replica gateway
   * without a cluster serves the handshake alone). Rows still must match.
   */
  readonly subset?: boolean;
}

/**
 * Turns a service's endpoint table into the definition's endpoints, keyed by
 * micro name: every subject and schema id is derived from the catalogue
 * name, never written by hand. A table that leaves out a catalogued endpoint
 * (unless `subset`), adds one the catalogue does not know, or declares other access or mutation
 * than the contract is a programming error caught at start (fail closed: a
 * drifted table must not serve a looser endpoint than the contract says).
 *
 * @throws ServiceDefinitionError
 */
export function endpointTable<S extends CatalogueService>(service: S, table: EndpointTable<S>, opts?: EndpointTableOptions & { readonly subset?: false }): Record<string, EndpointSpec>;
export function endpointTable<S extends CatalogueService>(service: S, table: Partial<EndpointTable<S>>, opts: EndpointTableOptions & { readonly subset: true }): Record<string, EndpointSpec>;
export function endpointTable<S extends CatalogueService>(service: S, table: Partial<EndpointTable<S>>, opts: EndpointTableOptions = {}): Record<string, EndpointSpec> {
  const catalogue = EndpointCatalogue[service] as Readonly<Record<string, CatalogueEntry>>;
  const rows = table as Readonly<Record<string, EndpointRow<S, EndpointName<S>>>>;
  const out: Record<string, EndpointSpec> = {};
  for (const name of Object.keys(rows)) {
    if (!Object.hasOwn(catalogue, name)) throw new ServiceDefinitionError(`service ${service}: endpoint ${name} is not in the catalogue`);
    // A binary endpoint has no schemas for the JSON pipeline to check: it is served raw, never through the table.
    if (catalogue[name]?.wire === "binary") throw new ServiceDefinitionError(`service ${service}: endpoint ${name} is binary, served as a raw endpoint`);
  }
  for (const [name, entry] of Object.entries(catalogue)) {
    if (entry.wire === "binary") continue;
    const row = rows[name];
    const where = `service ${service} endpoint ${name}`;
    if (row === undefined) {
      if (opts.subset === true) continue;
      throw new ServiceDefinitionError(`${where}: catalogued but missing from the table`);
    }
    if (row.access !== entry.access || row.mutates !== entry.mutates) {
      throw new ServiceDefinitionError(`${where}: table says ${String(row.access)}/${row.mutates ? "mutates" : "read-only"}, the catalogue ${entry.access}/${entry.mutates ? "mutates" : "read-only"}`);
    }
    let subject: string = endpointSubject(service, name as EndpointName<S>);
    if (entry.perReplica === true) {
      if (opts.replica === undefined || !/^[-\w]+$/.test(opts.replica)) throw new ServiceDefinitionError(`${where}: a per-replica endpoint needs a replica token`);
      subject = `${subject}.${opts.replica}`;
    }
    const impl = row.impl as EndpointImpl;
    out[microEndpointName(name)] = {
      ...(impl.maxPayloadBytes === undefined ? {} : { maxPayloadBytes: impl.maxPayloadBytes }),
      ...(impl.binary === undefined ? {} : { binary: impl.binary }),
      subject,
      ...endpointSchemaIds(service, name as EndpointName<S>),
      access: entry.access,
      mutates: entry.mutates,
      handler: (req, caller, ctx) => impl.handler(req, caller, ctx),
    };
  }
  return out;
}
