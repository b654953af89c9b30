/**
 * Environment variables a launcher (`unibus up`, a container's entry point)
 * sets for a service: named here because both sides read them and neither
 * may import the other.
 */

/** Environment variables healthz reads (in its main only). */
export const HealthzEnv = {
  /** `host:port` of the HTTP health server; default loopback with a free port. */
  listen: "UNIBUS_HEALTHZ_LISTEN",
  /** Comma-separated nats-server monitoring URLs (`http://127.0.0.1:8222`). */
  monitorUrls: "UNIBUS_NATS_MONITOR_URLS",
  /** The JetStream cipher the deployment configured (`chachapoly`, `aes`), or `none`. */
  cipher: "UNIBUS_JS_CIPHER",
  /** The bus's NATS WebSocket URL: when set, the admin panel is served at `/panel/`, offering it as the bus. */
  wsUrl: "UNIBUS_WS_URL",
} as const;

/** Environment variables auth-callout reads (paths only: secrets never travel in env or argv). */
export const CalloutEnv = {
  url: "UNIBUS_URL",
  /** Identity file of the callout's own connection (an `auth_users` nkey user). */
  identity: "UNIBUS_IDENTITY",
  /** File holding the issuer account seed (`SA…`), mode 0600. */
  issuerSeedFile: "UNIBUS_CALLOUT_ISSUER_SEED_FILE",
  /** Optional file holding the curve seed (`SX…`), mode 0600; set iff the server has `auth_callout.xkey`. */
  xkeySeedFile: "UNIBUS_CALLOUT_XKEY_SEED_FILE",
  /** `true` lets unknown identities reach the replica handshake (architecture §4); default off. */
  bootstrapAccess: "UNIBUS_CALLOUT_BOOTSTRAP_ACCESS",
  appAccount: "UNIBUS_APP_ACCOUNT",
} as const;

/** Environment variables membership reads besides the kit's. */
export const MembershipEnv = {
  /** Identity file of the system-account user that kicks connections. */
  sysIdentity: "UNIBUS_SYS_IDENTITY",
  /** Principal of the internal bootstrap identity (admin.bootstrap). */
  bootstrapPrincipal: "UNIBUS_BOOTSTRAP_PRINCIPAL",
} as const;
