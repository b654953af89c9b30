import { envRef, mergeNatsConfig } from "@unibus/natsd";
import type { NatsConfig } from "@unibus/natsd";

/** Name of the nats-server environment variable carrying the JetStream key. */
export const JETSTREAM_KEY_ENV = "UNIBUS_JS_KEY";

/**
 * The authorization part of the server config: top-level keys
 * (`authorization`, `accounts`, …) merged over the base config. Today
 * {@link nkeyUsersAuthorization}; the auth-callout fragment replaces it.
 */
export type AuthorizationFragment = NatsConfig;

/** Inputs of {@link buildServerConfig}. */
export interface BusServerConfigInput {
  /** Listen address for clients (loopback for the embedded default). */
  readonly host: string;
  /** Client port. */
  readonly port: number;
  /** Monitoring port on loopback, or undefined to disable monitoring. */
  readonly monitorPort: number | undefined;
  /** JetStream store directory. */
  readonly jetstreamDir: string;
  /** Who may connect, and as what. */
  readonly authorization: AuthorizationFragment;
  /** Server name shown in monitoring and `$SYS` events. */
  readonly serverName?: string;
}

/**
 * Until auth-callout lands: a static list of nkey users (admin + one per
 * service), so nobody without one of these identities can connect. Listing
 * nkey users also makes the server send a connect nonce (FIELD-NOTES).
 */
export function nkeyUsersAuthorization(principals: readonly string[]): AuthorizationFragment {
  return { authorization: { users: [...new Set(principals)].map((nkey) => ({ nkey })) } };
}

/**
 * The single place the `unibus up` server config is built. JetStream is
 * always encrypted at rest with a key the server reads from its environment
 * (`$UNIBUS_JS_KEY`), so the key is never in the config file or argv
 * (DESIGN §1.4).
 */
export function buildServerConfig(input: BusServerConfigInput): NatsConfig {
  const base: NatsConfig = {
    server_name: input.serverName ?? "unibus-local",
    host: input.host,
    port: input.port,
    ...(input.monitorPort === undefined ? {} : { http: `127.0.0.1:${input.monitorPort}` }),
    jetstream: {
      store_dir: input.jetstreamDir,
      cipher: "chachapoly",
      key: envRef(JETSTREAM_KEY_ENV),
    },
  };
  return mergeNatsConfig(base, input.authorization);
}
