/**
 * The endpoint catalogue: every control-plane endpoint of every service, once,
 * by its canonical name. Everything else about an endpoint is derived from
 * (service, name), so the subject, the schema files and the micro name cannot
 * drift apart:
 *
 * - name: dot-separated lowercase tokens, the resource first, then the verb
 *   or sub-resource (`users.add`, `rooms.invite`, `epochs.publish`,
 *   `put.begin`); a multi-word token joins its words with `_`
 *   (`agreement_keys.register`), never `-` or camelCase;
 * - subject: `unibus.v1.<service>.<name>` ({@link endpointSubject});
 * - schema ids: `<service>.<name>.request` and `<service>.<name>.reply`, the
 *   files `contracts/schemas/<service>/<name>.{request,reply}.json`;
 * - micro endpoint name: the name with `.` replaced by `-`
 *   ({@link microEndpointName}), since micro names cannot hold dots.
 *
 * An entry marked `wire: "binary"` has no schema files: its spec defines its
 * bytes.
 *
 * `<service>` is the subject token of the service (`replica` for the
 * replica-gateway, as architecture §2 names its subjects).
 */

/** Who may call an endpoint (the kit enforces it; the callout's grants follow the subjects). */
export const EndpointAccess = {
  /** Anyone connected; no envelope is checked. Such an endpoint may not mutate. */
  Public: "public",
  /** Any caller with a valid signed envelope; the handler authorizes further. */
  Signed: "signed",
  /** A signed caller whose resolved role is "admin"; everyone else is denied. */
  Admin: "admin",
  /**
   * Anyone connected, no envelope, and it may mutate: only for a protocol that
   * authenticates itself and carries its own single-use nonces (the replica PSK
   * handshake, which a node runs before it has any allowlisted identity).
   */
  Handshake: "handshake",
} as const;
/** One of the {@link EndpointAccess} values. */
export type EndpointAccess = (typeof EndpointAccess)[keyof typeof EndpointAccess];

/** What the catalogue says of one endpoint. */
export interface CatalogueEntry {
  readonly access: EndpointAccess;
  /** A mutating request's nonce is recorded, so a replay is rejected; a read-only one may be resent. */
  readonly mutates: boolean;
  /**
   * The endpoint listens on `<subject>.<replica>`: one instance answers for
   * the session it holds (blob chunks go to the replica holding the upload).
   */
  readonly perReplica?: true;
  /**
   * A client may send the request again when its connection drops while the
   * request is in flight (a kick that applies new permissions does exactly
   * that): only for a read that changes nothing, not even a session.
   */
  readonly resend?: true;
  /**
   * The endpoint speaks its own fixed binary layout, defined in its spec,
   * instead of the kit's JSON envelope: it has no JSON schemas and is served
   * as a raw endpoint (the replica PSK handshake's hello and finish).
   */
  readonly wire?: "binary";
}

const { Public, Signed, Admin, Handshake } = EndpointAccess;

/** Every endpoint by service subject token, then by canonical name. */
export const EndpointCatalogue = {
  membership: {
    "users.add": { access: Admin, mutates: true },
    "users.list": { access: Admin, mutates: false, resend: true },
    "users.get": { access: Admin, mutates: false, resend: true },
    "users.revoke": { access: Admin, mutates: true },
    /** One page of the users log, rooted at the bootstrap (contracts/specs/membership-log.md); clients verify it. */
    "users.log": { access: Signed, mutates: false, resend: true },
    "rooms.create": { access: Signed, mutates: true },
    "rooms.get": { access: Signed, mutates: false, resend: true },
    "rooms.list": { access: Signed, mutates: false, resend: true },
    "rooms.invite": { access: Signed, mutates: true },
    "rooms.remove": { access: Signed, mutates: true },
    "rooms.leave": { access: Signed, mutates: true },
    /** One page of a persisted room's stored frames, read by the service (members hold no JetStream grant). */
    "rooms.history": { access: Signed, mutates: false, resend: true },
    /** One page of a room's hash-chained membership log (contracts/specs/membership-log.md); clients verify it. */
    "rooms.log": { access: Signed, mutates: false, resend: true },
    /** Seeds admin #0; only the privileged internal bootstrap identity may publish here. */
    "admin.bootstrap": { access: Signed, mutates: true },
    /** Recorded login denials, read from the audit stream by the service (admins hold no JetStream grant). */
    "audit.denials": { access: Admin, mutates: false, resend: true },
  },
  keys: {
    /** Self-service: the caller registers its self-signed X25519 agreement key. */
    "agreement_keys.register": { access: Signed, mutates: true },
    /** A room's current members with their agreement keys (what a distributor seals to). */
    "agreement_keys.list": { access: Signed, mutates: false, resend: true },
    /** A new room-key epoch: sealed shares + one distributor signature (owners/admins). */
    "epochs.publish": { access: Signed, mutates: true },
    /** A room's epochs, one page. */
    "epochs.list": { access: Signed, mutates: false, resend: true },
    /** The caller's own sealed share of an epoch, with its Merkle proof. */
    "shares.get": { access: Signed, mutates: false, resend: true },
  },
  blobs: {
    "put.begin": { access: Signed, mutates: true },
    "put.chunk": { access: Signed, mutates: false, perReplica: true },
    "put.end": { access: Signed, mutates: true, perReplica: true },
    "get.begin": { access: Signed, mutates: false },
    "get.chunk": { access: Signed, mutates: false, perReplica: true },
  },
  replica: {
    /** Hello → challenge, binary (contracts/specs/replica-handshake.md); writes nothing, its state rides in the challenge nonce. */
    "handshake.hello": { access: Handshake, mutates: false, wire: "binary" },
    /** Finish → finish reply, binary. */
    "handshake.finish": { access: Handshake, mutates: true, wire: "binary" },
    /** Node-side lifecycle (contracts/specs/replica-lifecycle.md): signed by the node, with a handshake session. */
    "handshake.register": { access: Signed, mutates: true },
    "handshake.commit": { access: Signed, mutates: true },
    "handshake.join": { access: Signed, mutates: true },
    /** A replica's principal and per-process agreement key (public). */
    info: { access: Public, mutates: false },
    /** Admin-signed lifecycle and cluster endpoints. */
    init: { access: Admin, mutates: true },
    recover: { access: Admin, mutates: true },
    history: { access: Admin, mutates: false },
    ticket: { access: Admin, mutates: true },
    approve: { access: Admin, mutates: true },
    decommission: { access: Admin, mutates: true },
    nodes: { access: Admin, mutates: false },
    "gateway.add": { access: Admin, mutates: true },
    "gateway.remove": { access: Admin, mutates: true },
  },
  healthz: {
    status: { access: Public, mutates: false, resend: true },
    /** The posture document (admin-signed): what `unibus status` and the web panel show. */
    posture: { access: Admin, mutates: false, resend: true },
  },
} as const satisfies Record<string, Record<string, CatalogueEntry>>;

/** The shape of {@link EndpointCatalogue}. */
export type EndpointCatalogue = typeof EndpointCatalogue;
/** A service's subject token in the catalogue (`membership`, `keys`, `blobs`, `replica`, `healthz`). */
export type CatalogueService = keyof EndpointCatalogue;
/** The canonical endpoint names of service `S`. */
export type EndpointName<S extends CatalogueService> = keyof EndpointCatalogue[S] & string;

/** Prefix of every control-plane request subject. */
export const SubjectPrefix = "unibus.v1" as const;
/** The prefix as a type. */
export type SubjectPrefix = typeof SubjectPrefix;

/** `unibus.v1.<service>.<name>`: the subject of an endpoint (per-replica endpoints append `.<replica>`). */
export function endpointSubject<S extends CatalogueService, N extends EndpointName<S>>(service: S, name: N): `${SubjectPrefix}.${S}.${N}` {
  return `${SubjectPrefix}.${service}.${name}`;
}

/** `<service>.<name>.request` and `.reply`: the endpoint's schema ids. */
export function endpointSchemaIds<S extends CatalogueService, N extends EndpointName<S>>(service: S, name: N): { request: `${S}.${N}.request`; reply: `${S}.${N}.reply` } {
  return { request: `${service}.${name}.request`, reply: `${service}.${name}.reply` };
}

/** The micro endpoint name of a catalogue name: dots become `-` (micro names are letters, digits, `-`, `_`). */
export function microEndpointName(name: string): string {
  return name.replaceAll(".", "-");
}

/** `users.add` → `usersAdd`, `agreement_keys.register` → `agreementKeysRegister`. */
type CamelTail<S extends string> = S extends `${infer A}${"." | "_"}${infer B}` ? `${A}${Capitalize<CamelTail<B>>}` : S;
/** The `Subjects` constant name of a catalogue name. */
export type CamelEndpointName<N extends string> = CamelTail<N>;

/** The `Subjects` constant name of a catalogue name, as {@link CamelEndpointName} computes it. */
export function camelEndpointName<N extends string>(name: N): CamelEndpointName<N> {
  return name.replace(/[._]([a-z0-9])/g, (_, c: string) => c.toUpperCase()) as CamelEndpointName<N>;
}

/** Every endpoint subject of service `S`, by camel name, plus `all` (the service's wildcard, for permissions). */
export type ServiceSubjects<S extends CatalogueService> = { readonly all: `${SubjectPrefix}.${S}.>` } & {
  readonly [N in EndpointName<S> as CamelEndpointName<N>]: `${SubjectPrefix}.${S}.${N}`;
};

/** Builds {@link ServiceSubjects} of one service from the catalogue. */
export function serviceSubjects<S extends CatalogueService>(service: S): ServiceSubjects<S> {
  const out: Record<string, string> = { all: `${SubjectPrefix}.${service}.>` };
  for (const name of Object.keys(EndpointCatalogue[service])) out[camelEndpointName(name)] = `${SubjectPrefix}.${service}.${name}`;
  return Object.freeze(out) as ServiceSubjects<S>;
}

/** The subjects of every catalogued endpoint marked `resend`: what a client may send again after a dropped connection. */
export function resendableSubjects(): string[] {
  const out: string[] = [];
  for (const [service, endpoints] of Object.entries(EndpointCatalogue)) {
    for (const [name, entry] of Object.entries(endpoints as Readonly<Record<string, CatalogueEntry>>)) {
      if (entry.resend === true) out.push(`${SubjectPrefix}.${service}.${name}`);
    }
  }
  return out;
}
