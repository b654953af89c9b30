import { open } from "node:fs/promises";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { SigningKey, loadIdentityFile, nkeyAuthenticator } from "@unibus/crypto";
import { retry } from "@unibus/kit";
import type { ServiceEntry } from "@unibus/kit";
import type { Logger } from "pino";
import { CalloutEnv, DirectoryBucket } from "@unibus/contracts";
import { CalloutReconnect } from "./reconnect.js";
import { DenialCache } from "./denial-cache.js";
import { invalidateOnUserChanges } from "./directory.js";
import { CalloutConfigError } from "./errors.js";
import { AUTH_CALLOUT_SERVICE_NAME, createAuthCalloutService } from "./service.js";
import { WatchedDirectory } from "./watched-directory.js";
import { CalloutXkey } from "./xkey.js";

// The environment the callout reads, once, here (the process hands it in:
// only a main touches `process`); its names are a contract with the launchers.
export { CalloutEnv } from "@unibus/contracts";

/** Typed configuration of the callout process. */
export interface CalloutConfig {
  url: string;
  identityPath: string;
  issuerSeedFile: string;
  xkeySeedFile?: string;
  bootstrapAccess: boolean;
  appAccount: string;
}

/** Reads {@link CalloutConfig} from an environment map. Paths only: secrets never travel in env or argv. */
export function loadCalloutConfig(env: NodeJS.ProcessEnv): CalloutConfig {
  const need = (name: string): string => {
    const v = env[name];
    if (v === undefined || v === "") throw new CalloutConfigError(`${name} is not set`);
    return v;
  };
  const xkeySeedFile = env[CalloutEnv.xkeySeedFile];
  return {
    url: need(CalloutEnv.url),
    identityPath: need(CalloutEnv.identity),
    issuerSeedFile: need(CalloutEnv.issuerSeedFile),
    ...(xkeySeedFile ? { xkeySeedFile } : {}),
    bootstrapAccess: env[CalloutEnv.bootstrapAccess] === "true",
    appAccount: env[CalloutEnv.appAccount] || "UNIBUS",
  };
}

/**
 * Reads a seed file, refusing one that group/other can read (a readable
 * issuer seed lets anyone mint logins for any principal).
 */
export async function readSecretFile(path: string): Promise<string> {
  const fh = await open(path, "r");
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new CalloutConfigError(`${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) throw new CalloutConfigError(`${path} allows group/other access (chmod 600)`);
    return (await fh.readFile("utf8")).trim();
  } finally {
    await fh.close();
  }
}

/** How long the callout waits for membership to create the directory buckets on a fresh bus. */
const DIRECTORY_WAIT_MS = 60_000;

/**
 * Opens the directory buckets, waiting while they do not exist yet: the
 * callout may read them but only membership creates them, and both start
 * together on a fresh bus. Until then no client can log in anyway.
 */
async function openDirectoryBuckets(kvm: Kvm, log: Logger): Promise<[KV, KV]> {
  let logged = false;
  return retry(
    async () => {
      // Leader reads, never a direct get that any (lagging) replica may answer:
      // a login right after a revoke must see the revoke.
      // A fresh options object per open: Kvm.open writes bindOnly into it.
      const buckets: [KV, KV] = [await kvm.open(DirectoryBucket.users, { allow_direct: false }), await kvm.open(DirectoryBucket.roomsByMember, { allow_direct: false })];
      // `open` binds without looking; `status` fails while a bucket does not exist.
      for (const kv of buckets) await kv.status();
      return buckets;
    },
    {
      budgetMs: DIRECTORY_WAIT_MS,
      delayMs: 250,
      onRetry: () => {
        if (!logged) log.info({ op: "start" }, "waiting for membership to create the directory buckets");
        logged = true;
      },
    },
  );
}

/**
 * How a process runs the auth callout (its own `main.ts`, or `unibus up`'s one
 * process for every service): its own connection, as its own config-level
 * user, with the inbox prefix its permissions allow.
 */
export const authCalloutEntry: ServiceEntry = {
  name: AUTH_CALLOUT_SERVICE_NAME,
  async start(env, log) {
    const config = loadCalloutConfig(env);
    const identity = await loadIdentityFile(config.identityPath);
    const issuer = SigningKey.fromNkeySeed(await readSecretFile(config.issuerSeedFile));
    if (!issuer.principal.startsWith("A")) throw new CalloutConfigError("issuer seed is not an account (SA…) seed");
    const xkey = config.xkeySeedFile !== undefined ? CalloutXkey.fromSeed(await readSecretFile(config.xkeySeedFile)) : undefined;

    const nc: NatsConnection = await connect({
      // A seed list (`nats://nats-1:4222,nats://nats-2:4222,…`) in a cluster, as for the kit services.
      servers: config.url.split(",").map((s) => s.trim()).filter((s) => s !== ""),
      name: AUTH_CALLOUT_SERVICE_NAME,
      authenticator: nkeyAuthenticator(identity.signingKey),
      inboxPrefix: `_INBOX.${identity.principal}`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: CalloutReconnect.timeWaitMs,
      reconnectJitter: CalloutReconnect.jitterMs,
      // A tls:// seed means TLS or nothing, as for the kit services.
      ...(/(^|,)\s*tls:\/\//i.test(config.url) ? { tls: {} } : {}),
    });
    try {
      const kvm = new Kvm(nc);
      const [users, roomsByMember] = await openDirectoryBuckets(kvm, log);
      // Kept in memory from watches, but every login waits for a fence read
      // from the stream leaders: membership revokes with "write, then kick",
      // and a copy that has not yet applied the write would let the kicked
      // client straight back in.
      const directory = await WatchedDirectory.start(users, roomsByMember, { logger: log });
      const denialCache = new DenialCache();
      const watch = invalidateOnUserChanges(users, denialCache, (err) =>
        log.warn({ op: "denial-cache", err: err instanceof Error ? err.message : String(err) }, "users watch interrupted; denial cache cleared"),
      );
      const service = await createAuthCalloutService(nc, {
        issuer,
        ...(xkey !== undefined ? { xkey } : {}),
        directory,
        denialCache,
        logger: log,
        appAccount: config.appAccount,
        bootstrapAccess: config.bootstrapAccess,
      });
      log.info({ op: "start", principal: identity.principal, issuer: issuer.principal, encrypted: xkey !== undefined }, "auth callout ready");
      return {
        closed: nc.closed(),
        async stop() {
          watch.stop();
          directory.stop();
          await service.stop();
          await nc.drain();
        },
      };
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw err;
    }
  },
};
