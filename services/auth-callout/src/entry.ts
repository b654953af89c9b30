import { open } from "node:fs/promises";
import { jetstream } from "@nats-io/jetstream";
import { pino } from "pino";
import { SigningKey } from "@unibus/crypto";
import { kitServiceEntry, openBuckets, openExistingBuckets } from "@unibus/kit";
import type { ServiceEntry } from "@unibus/kit";
import { CalloutEnv, CalloutLease, DirectoryBucket, StoredBucket } from "@unibus/contracts";
import { CalloutReconnect } from "./reconnect.js";
import { DenialCache } from "./denial-cache.js";
import { invalidateOnUserChanges } from "./store/directory.js";
import { CalloutConfigError } from "./errors.js";
import { AUTH_CALLOUT_SERVICE_NAME, createAuthCalloutService } from "./service.js";
import { WatchedDirectory } from "./store/watched-directory.js";
import { CalloutLeaseRunner } from "./store/lease.js";
import { CalloutXkey } from "./xkey.js";

// The environment the callout reads, once, here (the process hands it in:
// only a main touches `process`); its names are a contract with the launchers.
export { CalloutEnv } from "@unibus/contracts";

/** The callout's own configuration; the URL, identity and log level are the kit's (`loadServiceConfig`). */
export interface CalloutConfig {
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

/**
 * How a process runs the auth callout (its own `main.ts`, or `unibus up`'s one
 * process for every service), with the kit's connection, config and logger:
 * its own config-level user, replies only under its own inbox (all its
 * permissions allow), and a fast way back after a server restart.
 */
export const authCalloutEntry: ServiceEntry = kitServiceEntry(
  AUTH_CALLOUT_SERVICE_NAME,
  (env) => {
    const config = loadCalloutConfig(env);
    return async (nc, deps) => {
      const issuer = SigningKey.fromNkeySeed(await readSecretFile(config.issuerSeedFile));
      if (!issuer.principal.startsWith("A")) throw new CalloutConfigError("issuer seed is not an account (SA…) seed");
      const xkey = config.xkeySeedFile !== undefined ? CalloutXkey.fromSeed(await readSecretFile(config.xkeySeedFile)) : undefined;
      const log = deps.logger;
      // The callout may read the directory buckets but only membership creates
      // them, and both start together on a fresh bus: wait for them (no client
      // can log in before anyway). Leader reads, never a direct get that a
      // lagging replica may answer: a login right after a revoke must see it.
      // Retried every half second at most: every login waits for the callout.
      const buckets = await openExistingBuckets(jetstream(nc), [DirectoryBucket.users, DirectoryBucket.roomsByMember], {
        budgetMs: deps.bucketBudgetMs ?? 60_000,
        maxDelayMs: 500,
        ...(log === undefined ? {} : { logger: log }),
      });
      const users = buckets[DirectoryBucket.users];
      // Kept in memory from watches, but every login waits for a fence read
      // from the stream leaders: membership revokes with "write, then kick",
      // and a copy that has not yet applied the write would let the kicked
      // client straight back in.
      const denialCache = new DenialCache();
      const directory = await WatchedDirectory.start(users, buckets[DirectoryBucket.roomsByMember], {
        logger: log ?? pino({ level: "silent" }),
        // A refusal cached before an ADD is dropped as the copy applies it,
        // so a write a barrier reported applied is honoured at the next login.
        onUserApplied: (principal) => denialCache.invalidate(principal),
      });
      // The login lease: its own bucket, created here (membership only reads
      // it). Without it every login is fenced, as before.
      let lease: CalloutLeaseRunner;
      try {
        const { [StoredBucket.authCallout.leases]: leases } = await openBuckets(
          jetstream(nc),
          [{ name: StoredBucket.authCallout.leases, ttl: CalloutLease.recordTtlMs, replicas: deps.bucketReplicas ?? 1 }],
          { budgetMs: deps.bucketBudgetMs ?? 60_000, maxDelayMs: 500, ...(log === undefined ? {} : { logger: log }) },
        );
        lease = await CalloutLeaseRunner.start(nc, leases, directory, { logger: log ?? pino({ level: "silent" }) });
      } catch (err) {
        directory.stop();
        throw err;
      }
      const watch = invalidateOnUserChanges(users, denialCache, (err) =>
        log?.warn({ op: "denial-cache", err: err instanceof Error ? err.message : String(err) }, "users watch interrupted; denial cache cleared"),
      );
      try {
        const running = await createAuthCalloutService(nc, {
          ...deps,
          issuer,
          ...(xkey !== undefined ? { xkey } : {}),
          directory,
          denialCache,
          appAccount: config.appAccount,
          bootstrapAccess: config.bootstrapAccess,
        });
        log?.info({ op: "start", issuer: issuer.principal, encrypted: xkey !== undefined }, "auth callout ready");
        return {
          ...running,
          async stop() {
            await lease.stop();
            watch.stop();
            directory.stop();
            await running.stop();
          },
        };
      } catch (err) {
        await lease.stop();
        watch.stop();
        directory.stop();
        throw err;
      }
    };
  },
  { ownInbox: true, reconnectTimeWaitMs: CalloutReconnect.timeWaitMs, reconnectJitterMs: CalloutReconnect.jitterMs },
);
