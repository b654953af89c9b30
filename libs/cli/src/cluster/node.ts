import { open, readdir } from "node:fs/promises";
import { join } from "node:path";
import { blake3DeriveKey, nodeStoreKey, toHex } from "@unibus/crypto";
import { NatsServerStartError, envRef, mergeNatsConfig, startNatsServer } from "@unibus/natsd";
import type { NatsConfig, NatsServerProcess } from "@unibus/natsd";
import { CliError } from "../errors.js";
import { ensurePrivateDir, writePrivateFile } from "../home.js";
import { JETSTREAM_CIPHER, JETSTREAM_KEY_ENV, SYNC_ALWAYS } from "../up/server-config.js";

/** Stable reasons of a refused node start. */
export const NodeStartErrorReason = {
  /** The derived key is not the one this node's store was written with. */
  wrongKey: "wrong_key",
  /** The store holds data but no key check: it cannot be proven to match, so it is not opened. */
  uncheckedStore: "unchecked_store",
  /** The unlock callback failed or returned malformed keys. */
  unlockFailed: "unlock_failed",
  /** nats-server itself did not start. */
  serverFailed: "server_failed",
} as const;
export type NodeStartErrorReason = (typeof NodeStartErrorReason)[keyof typeof NodeStartErrorReason];

/** A refused node start, with a stable reason beside the message. */
export class NodeStartError extends CliError {
  readonly reason: NodeStartErrorReason;

  constructor(reason: NodeStartErrorReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NodeStartError";
    this.reason = reason;
  }
}

/** The two halves of a node's store key: the node's own, and the one the cluster hands out at join. */
export interface UnlockKeys {
  /** Node unlock key (32 bytes), kept in the node home (`nuk`, 0600). */
  readonly nuk: Uint8Array;
  /** Cluster unlock key (32 bytes), received from the cluster at every boot, never stored. */
  readonly cuk: Uint8Array;
}

/** Mutual-TLS material of the route port. */
export interface RouteTls {
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
}

/** Options of {@link startClusterNode}. */
export interface ClusterNodeOptions {
  /** The node home: `server/` (config, log, ports) and `data/` (the JetStream store) go under it. */
  readonly dir: string;
  readonly serverName: string;
  readonly clusterName: string;
  /** Route listen address, `host:port`. */
  readonly listen: string;
  /** Route URLs of the other nodes (`nats-route://host:port`). */
  readonly routes: readonly string[];
  /** Client port (and host, default 127.0.0.1). */
  readonly port: number;
  readonly host?: string;
  /** HTTP monitoring port on 127.0.0.1, or none. */
  readonly monitorPort?: number;
  readonly routeTls?: RouteTls;
  /** Accounts and authorization (the bus's callout config), merged over the node's base config. */
  readonly config?: NatsConfig;
  /** nats-server executable. */
  readonly bin: string;
  /**
   * Produces the node's unlock keys; in production the cluster join (which
   * returns the CUK) and the node's `nuk` file. Called once per start.
   */
  readonly unlock: () => Promise<UnlockKeys>;
}

/** A started node: its server, and where its store lives. */
export interface ClusterNode {
  readonly server: NatsServerProcess;
  readonly storeDir: string;
  /** Route URL other nodes dial (`nats-route://listen`). */
  readonly routeUrl: string;
}

/** File in the node home that proves a key opens this store (a one-way value, not the key). */
export const STORE_CHECK_FILE = "store.check";
const STORE_CHECK_CONTEXT = "unibus 2026-12-04 node store check v1";

/** The verifier of `key`: BLAKE3 derive_key under its own context, so it reveals nothing usable as the key. */
function storeCheck(key: string): string {
  return toHex(blake3DeriveKey(STORE_CHECK_CONTEXT, new TextEncoder().encode(key)));
}

async function readCheck(path: string): Promise<string | undefined> {
  try {
    const fh = await open(path, "r");
    try {
      return (await fh.readFile("utf8")).trim();
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

async function hasData(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length > 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** Constant-time comparison of two hex strings of equal length. */
function sameHex(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/**
 * Checks `key` against the node's store before any server sees it. nats-server
 * 2.15.1 refuses a wrong key on a cluster node's store itself (it cannot
 * decrypt its meta log and exits), but a single server skips the streams it
 * cannot decrypt and starts empty; the check does not depend on which of the
 * two the server does, fails with a stable reason, and never hands a wrong
 * key to a server at all.
 *
 * @throws NodeStartError `wrong_key` or `unchecked_store`.
 */
export async function assertKeyOpensStore(dir: string, storeDir: string, key: string): Promise<void> {
  const checkFile = join(dir, STORE_CHECK_FILE);
  const expected = await readCheck(checkFile);
  const stored = await hasData(storeDir);
  if (expected === undefined) {
    if (stored) {
      throw new NodeStartError(NodeStartErrorReason.uncheckedStore, `${storeDir} holds data but ${checkFile} is missing: the key cannot be checked, so the store was not opened`);
    }
    return;
  }
  if (!sameHex(expected, storeCheck(key))) {
    throw new NodeStartError(
      NodeStartErrorReason.wrongKey,
      `the unlock keys do not open ${storeDir} (wrong node unlock key, or a cluster unlock key of another cluster); nats-server was not started`,
    );
  }
}

/** The node's nats-server config: cluster block, fsync before every ack, store encrypted with the key from the environment only. */
export function clusterNodeConfig(opts: Omit<ClusterNodeOptions, "unlock" | "bin">, storeDir: string): NatsConfig {
  const host = opts.host ?? "127.0.0.1";
  const base: NatsConfig = {
    server_name: opts.serverName,
    host,
    port: opts.port,
    ...(opts.monitorPort === undefined ? {} : { http: `127.0.0.1:${opts.monitorPort}` }),
    jetstream: {
      store_dir: storeDir,
      cipher: JETSTREAM_CIPHER,
      key: envRef(JETSTREAM_KEY_ENV),
      // A cluster's acknowledged write must survive a power loss of every node.
      sync_interval: SYNC_ALWAYS,
    },
    cluster: {
      name: opts.clusterName,
      listen: opts.listen,
      routes: [...opts.routes],
      ...(opts.routeTls === undefined ? {} : { tls: { cert_file: opts.routeTls.certFile, key_file: opts.routeTls.keyFile, ca_file: opts.routeTls.caFile, verify: true, timeout: 5 } }),
    },
  };
  return mergeNatsConfig(base, opts.config);
}

/**
 * Starts one cluster node: asks `unlock` for the NUK and CUK, derives the
 * store key ({@link nodeStoreKey}), refuses a key that does not open the
 * node's existing store, and starts nats-server with the key in its
 * environment only (the config says `$UNIBUS_JS_KEY`; argv names only the
 * config file). The key and both halves live only in this call.
 *
 * @throws NodeStartError with reason `unlock_failed`, `wrong_key`, `unchecked_store` or `server_failed`.
 */
export async function startClusterNode(opts: ClusterNodeOptions): Promise<ClusterNode> {
  const storeDir = join(opts.dir, "data");
  const serverDir = join(opts.dir, "server");
  await ensurePrivateDir(opts.dir);
  let key: string;
  try {
    const { nuk, cuk } = await opts.unlock();
    key = nodeStoreKey(nuk, cuk);
  } catch (err) {
    throw new NodeStartError(NodeStartErrorReason.unlockFailed, `cannot unlock node ${opts.serverName}: ${(err as Error).message}`, { cause: err });
  }
  await assertKeyOpensStore(opts.dir, storeDir, key);
  await ensurePrivateDir(storeDir);
  await ensurePrivateDir(serverDir);
  let server: NatsServerProcess;
  try {
    server = await startNatsServer({ config: clusterNodeConfig(opts, storeDir), dir: serverDir, bin: opts.bin, name: `nats-server (${opts.serverName})`, env: { [JETSTREAM_KEY_ENV]: key } });
  } catch (err) {
    if (err instanceof NatsServerStartError) throw new NodeStartError(NodeStartErrorReason.serverFailed, `nats-server (${opts.serverName}) did not start: ${err.message}`, { cause: err });
    throw err;
  }
  if ((await readCheck(join(opts.dir, STORE_CHECK_FILE))) === undefined) await writePrivateFile(join(opts.dir, STORE_CHECK_FILE), `${storeCheck(key)}\n`);
  return { server, storeDir, routeUrl: `nats-route://${opts.listen}` };
}
