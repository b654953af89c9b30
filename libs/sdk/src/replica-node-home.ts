/**
 * A cluster node's home directory: `node.key` (its identity; the Ed25519 key
 * is the join key), `nuk` (the node unlock key, 32 bytes), `cuk.wrapped`
 * (the gateway's wrapped copy of the node's CUK, useless without the
 * cluster seed) and `cluster.json` (the cluster's public keys). Secret files
 * are 0600 and a looser mode is refused: another local account that can read
 * `nuk` holds half of the node's at-rest key.
 */
import { constants as fsConstants } from "node:fs";
import { mkdir, open, readFile } from "node:fs/promises";
import { join } from "node:path";
import { createIdentity, loadIdentityFile, randomBytes, writeIdentityFile } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";

/** File names inside a node home. */
export const NodeHomeFile = { key: "node.key", nuk: "nuk", cukWrapped: "cuk.wrapped", cluster: "cluster.json" } as const;

/** Environment variable naming the node home. */
export const NODE_HOME_ENV = "UNIBUS_NODE_HOME";

/** The cluster's public facts a node keeps (from its register reply). */
export interface NodeClusterInfo {
  nodeId: string;
  clusterName: string;
  clusterId: string;
  historyKey: string;
  agreementKey: string;
}

/** A node home file that is missing, malformed or readable by others. The message names the file, never its content. */
export class NodeHomeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NodeHomeError";
  }
}

async function writeSecret(path: string, data: Uint8Array | string, overwrite: boolean): Promise<void> {
  // O_EXCL unless overwriting, and 0600 from the start: the secret is never readable by others, not even briefly.
  const flags = fsConstants.O_WRONLY | fsConstants.O_CREAT | (overwrite ? fsConstants.O_TRUNC : fsConstants.O_EXCL) | fsConstants.O_NOFOLLOW;
  let fh;
  try {
    fh = await open(path, flags, 0o600);
  } catch (err) {
    if ((err as { code?: string }).code === "EEXIST") throw new NodeHomeError(`${path} already exists`);
    throw new NodeHomeError(`cannot write ${path}`);
  }
  try {
    await fh.chmod(0o600);
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function readSecret(path: string): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch {
    throw new NodeHomeError(`cannot read ${path}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new NodeHomeError(`${path} must be a regular file`);
    if ((st.mode & 0o077) !== 0) throw new NodeHomeError(`${path} has mode ${(st.mode & 0o777).toString(8)}; it must be 0600`);
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/** Creates a node home: a fresh identity and node unlock key. Refuses to overwrite either. */
export async function initNodeHome(home: string): Promise<Identity> {
  await mkdir(home, { recursive: true, mode: 0o700 });
  const identity = createIdentity({ label: "unibus node" });
  await writeIdentityFile(join(home, NodeHomeFile.key), identity);
  await writeSecret(join(home, NodeHomeFile.nuk), randomBytes(32), false);
  return identity;
}

/** The node's identity (its join key); the identity loader refuses a file others can read. */
export async function loadNodeIdentity(home: string): Promise<Identity> {
  return loadIdentityFile(join(home, NodeHomeFile.key));
}

/** The node unlock key (32 bytes, a secret): half of the node's at-rest key. */
export async function readNodeUnlockKey(home: string): Promise<Uint8Array> {
  const b = await readSecret(join(home, NodeHomeFile.nuk));
  if (b.byteLength !== 32) throw new NodeHomeError(`${join(home, NodeHomeFile.nuk)} must hold 32 bytes`);
  return new Uint8Array(b);
}

/** Stores the wrapped CUK the commit returned (kept for a cold start without any gateway). */
export async function writeWrappedCuk(home: string, wrapped: Uint8Array): Promise<void> {
  await writeSecret(join(home, NodeHomeFile.cukWrapped), wrapped, true);
}

/** The wrapped CUK of this node. */
export async function readWrappedCuk(home: string): Promise<Uint8Array> {
  return new Uint8Array(await readSecret(join(home, NodeHomeFile.cukWrapped)));
}

/** Stores the cluster's public facts (register reply). */
export async function writeNodeClusterInfo(home: string, info: NodeClusterInfo): Promise<void> {
  await writeSecret(join(home, NodeHomeFile.cluster), `${JSON.stringify(info, null, 2)}\n`, true);
}

/** The cluster's public facts, as stored by {@link writeNodeClusterInfo}. */
export async function readNodeClusterInfo(home: string): Promise<NodeClusterInfo> {
  let text: string;
  try {
    text = await readFile(join(home, NodeHomeFile.cluster), "utf8");
  } catch {
    throw new NodeHomeError(`cannot read ${join(home, NodeHomeFile.cluster)}: run unibus node register first`);
  }
  try {
    return JSON.parse(text) as NodeClusterInfo;
  } catch {
    throw new NodeHomeError(`${join(home, NodeHomeFile.cluster)} is not JSON`);
  }
}
