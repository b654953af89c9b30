import { ServiceStorage, Subjects } from "@unibus/contracts";
import { calloutServerConfig, serviceStoragePermissions } from "@unibus/kit";
import type { AccountJetStreamLimits, ServerPermissions, ServiceUser } from "@unibus/kit";
import { SINGLE_NODE_LAME_DUCK, envRef, mergeNatsConfig } from "@unibus/natsd";
import type { NatsConfig } from "@unibus/natsd";
import type { ProvisionedHome } from "./provision.js";
import { ServiceName } from "./services.js";

/** The JetStream at-rest cipher `unibus up` configures (healthz reports it). */
export const JETSTREAM_CIPHER = "chachapoly";

/** Name of the nats-server environment variable carrying the JetStream key. */
export const JETSTREAM_KEY_ENV = "UNIBUS_JS_KEY";

/**
 * The authorization part of the server config: top-level keys
 * (`authorization`, `accounts`, …) merged over the base config: see
 * {@link calloutAuthorization}.
 */
export type AuthorizationFragment = NatsConfig;

/** Inputs of {@link buildServerConfig}. */
export interface BusServerConfigInput {
  /** Listen address for clients (loopback for the embedded default). */
  readonly host: string;
  /** Client port. */
  readonly port: number;
  /** Monitoring port, or undefined to disable monitoring. */
  readonly monitorPort: number | undefined;
  /**
   * Monitoring listen address: loopback unless a container network must
   * reach it (the monitoring port has no authentication of its own).
   */
  readonly monitorHost?: string;
  /** JetStream store directory. */
  readonly jetstreamDir: string;
  /** Who may connect, and as what. */
  readonly authorization: AuthorizationFragment;
  /** Server name shown in monitoring and `$SYS` events. */
  readonly serverName?: string;
  /** JetStream `sync_interval` (see {@link jetStreamSyncInterval}); undefined keeps the server default. */
  readonly syncInterval?: string;
  /** Client TLS (`unibus up --tls`): every client connection must use it. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
  /** NATS WebSocket port (the admin panel's transport), or undefined for none. */
  readonly websocketPort?: number;
  /** WebSocket listen address: loopback unless a container publishes it to the host's loopback. */
  readonly websocketHost?: string;
}

/**
 * The `websocket {}` block: loopback only, because the only browser meant
 * to reach it is the admin panel on the same machine; a non-loopback
 * listener would expose the bus to any page a user visits on the network.
 * Plain on a plain bus, and with the bus's own certificate (wss) on a TLS
 * bus. Browser clients still go through the auth callout like the CLI, so
 * the socket grants nothing a TCP client would not get.
 */
export function websocketConfig(port: number, host = "127.0.0.1", tls?: BusServerConfigInput["tls"]): NatsConfig {
  // With TLS on the bus the browser gets wss too: a plain socket beside a TLS bus would be the weak door.
  if (tls !== undefined) return { listen: `${host}:${port}`, tls: { cert_file: tls.certFile, key_file: tls.keyFile } };
  return { listen: `${host}:${port}`, no_tls: true };
}

/** Environment variable overriding JetStream's `sync_interval`. */
export const JS_SYNC_INTERVAL_ENV = "UNIBUS_JS_SYNC_INTERVAL";

/** `sync_interval: always`: fsync before every acknowledgement. */
export const SYNC_ALWAYS = "always";

// `always`, or a Go duration as nats-server parses it (`2m`, `10s`, `500ms`, `1m30s`).
const SYNC_INTERVAL_FORMAT = /^(always|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$/;

/**
 * The JetStream `sync_interval` to configure. A cluster defaults to
 * `always`: with the server default (fsync every 2 minutes) an
 * acknowledged write lives only in the page cache of each replica, and a
 * power loss of the whole cluster loses it although every client was told it
 * was stored. A single node keeps the server default (fast, and a power loss
 * can lose the last writes) unless `UNIBUS_JS_SYNC_INTERVAL` says otherwise.
 *
 * @throws Error when the variable is neither `always` nor a duration.
 */
export function jetStreamSyncInterval(env: Readonly<Record<string, string | undefined>>, clustered: boolean): string | undefined {
  const raw = env[JS_SYNC_INTERVAL_ENV]?.trim();
  if (raw === undefined || raw === "") return clustered ? SYNC_ALWAYS : undefined;
  if (!SYNC_INTERVAL_FORMAT.test(raw)) throw new Error(`${JS_SYNC_INTERVAL_ENV}=${JSON.stringify(raw)}: use "always" or a duration such as 2m, 10s, 500ms`);
  return raw;
}

/** Who may connect as a config-level user (everyone else goes through the callout). */
export interface BusPrincipals {
  /** `A…` key whose signature on a callout response the server trusts. */
  readonly calloutIssuerPublic: string;
  /** `X…` curve key: the server encrypts callout requests to it (`unibus up` always sets one). */
  readonly calloutXkeyPublic?: string;
  /** Each service's `U…` nkey; auth-callout's is the callout user. */
  readonly services: ReadonlyMap<ServiceName, string>;
  /** System-account user that kicks connections (membership only). */
  readonly systemPublic: string;
  /** The internal identity allowed only `admin.bootstrap`. */
  readonly bootstrapPublic: string;
}

/**
 * What each service's connection may do (architecture §4 "service:X"),
 * generated from the service's storage declaration in contracts: its own
 * endpoints, micro discovery, replies, the buckets it owns and read-only
 * access to the ones it reads.
 */
export function serviceUserPermissions(name: Exclude<ServiceName, "auth-callout">): ServerPermissions {
  return serviceStoragePermissions(ServiceStorage[name]);
}

/**
 * The bootstrap identity may send one request and read its own replies:
 * even with its key, nobody can do more than seed admin #0 once.
 */
export function bootstrapUserPermissions(bootstrapPublic: string): ServerPermissions {
  return { publish: { allow: [Subjects.membership.adminBootstrap] }, subscribe: { allow: [`_INBOX.${bootstrapPublic}.>`] } };
}

/**
 * The auth-callout fragment: services, the system user and the bootstrap
 * identity are config-level users; every other connection (admins included)
 * is decided by the callout, encrypted with the xkey. The app account gets
 * `jetstreamLimits` (default: the callout package's defaults).
 */
export function calloutAuthorization(p: BusPrincipals, jetstreamLimits?: AccountJetStreamLimits): AuthorizationFragment {
  const calloutUserPublic = p.services.get(ServiceName.authCallout);
  if (calloutUserPublic === undefined) throw new Error("no auth-callout identity");
  const serviceUsers: ServiceUser[] = [];
  for (const [service, nkey] of p.services) {
    if (service !== ServiceName.authCallout) serviceUsers.push({ service, nkey, permissions: serviceUserPermissions(service) });
  }
  serviceUsers.push({ service: "bootstrap", nkey: p.bootstrapPublic, permissions: bootstrapUserPermissions(p.bootstrapPublic) });
  return calloutServerConfig({
    issuerAccountPublic: p.calloutIssuerPublic,
    calloutUserPublic,
    ...(p.calloutXkeyPublic !== undefined ? { xkeyPublic: p.calloutXkeyPublic } : {}),
    serviceUsers,
    systemUserPublic: p.systemPublic,
    ...(jetstreamLimits === undefined ? {} : { jetstreamLimits }),
  });
}

/**
 * The accounts and authorization of a provisioned home: what `unibus up`,
 * `cluster promote` and `cluster bus-config` give nats-server, so every node
 * of a cluster runs the same. Public keys only.
 */
export function homeAuthorization(state: ProvisionedHome, jetstreamLimits?: AccountJetStreamLimits): AuthorizationFragment {
  return calloutAuthorization(
    {
      calloutIssuerPublic: state.calloutIssuerPublic,
      calloutXkeyPublic: state.calloutXkeyPublic,
      services: new Map([...state.services].map(([name, id]) => [name, id.principal])),
      systemPublic: state.system.principal,
      bootstrapPublic: state.bootstrap.principal,
    },
    jetstreamLimits,
  );
}

/**
 * The single place the `unibus up` server config is built. JetStream is
 * always encrypted at rest with a key the server reads from its environment
 * (`$UNIBUS_JS_KEY`), so the key is never in the config file or argv
 * (architecture §1.4).
 */
export function buildServerConfig(input: BusServerConfigInput): NatsConfig {
  const base: NatsConfig = {
    server_name: input.serverName ?? "unibus-local",
    host: input.host,
    port: input.port,
    ...(input.monitorPort === undefined ? {} : { http: `${input.monitorHost ?? "127.0.0.1"}:${input.monitorPort}` }),
    ...(input.websocketPort === undefined ? {} : { websocket: websocketConfig(input.websocketPort, input.websocketHost, input.tls) }),
    // A takeover stops an orphaned server in lame duck mode: with no other node to move to, it should not linger.
    ...SINGLE_NODE_LAME_DUCK,
    // TLS hides subjects, inboxes and payload sizes on the wire; the callout and nkey signatures stay as they are.
    ...(input.tls === undefined ? {} : { tls: { cert_file: input.tls.certFile, key_file: input.tls.keyFile } }),
    jetstream: {
      store_dir: input.jetstreamDir,
      cipher: JETSTREAM_CIPHER,
      key: envRef(JETSTREAM_KEY_ENV),
      sync_interval: input.syncInterval,
    },
  };
  return mergeNatsConfig(base, input.authorization);
}
