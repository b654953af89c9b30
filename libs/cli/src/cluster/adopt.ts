import { open, rename, rm, rmdir, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { createIdentity, nkeyAuthenticator } from "@unibus/crypto";
import { NatsServerStartError, startNatsServer } from "@unibus/natsd";
import type { NatsConfig, NatsServerProcess } from "@unibus/natsd";
import { CliError } from "../errors.js";
import { writePrivateFile } from "../home.js";
import type { HomeLayout } from "../home.js";
import { APP_ACCOUNT, assertSameDigests, digestAll } from "../store/maintenance.js";
import { freePort } from "../up/ports.js";
import type { StreamDigest } from "../store/maintenance.js";
import { fileExists } from "../up/provision.js";
import { JETSTREAM_KEY_ENV } from "../up/server-config.js";
import { CLUSTER_FILE, readClusterRecord, waitForPeers, withMaintenanceUser } from "./convert.js";
import type { ClusterRecord } from "./convert.js";
import { clusterNodeConfig, startClusterNode } from "./node.js";
import type { ClusterNode, RouteTls, UnlockKeys } from "./node.js";
import { PromoteError, PromoteErrorReason, planPromotion, waitForCurrentReplicas } from "./promote.js";
import type { PromotionStep, ReplicaStatus } from "./promote.js";

/** Where the home's own store waits while the node's new store catches up: the way back until it is current. */
export const RETIRED_SUFFIX = ".retired";

/** Replicas every stream needs before the first node's copy may be dropped: two more copies hold everything. */
const REQUIRED_REPLICAS = 3;

/** Stable reasons of a refused adoption. */
export const AdoptErrorReason = {
  /** The home is not a cluster node (no cluster.json): there are no peers to rebuild from. */
  notPromoted: "not_promoted",
  /** The home was adopted already: its own store and key are gone. */
  alreadyAdopted: "already_adopted",
  /** The node home names another server or cluster than the home's cluster record. */
  nodeMismatch: "node_mismatch",
  /** A stream (or the cluster record) is below R3: dropping this node's copy could lose data. */
  notReplicated: "not_replicated",
  /** A stream's other replicas are not current: dropping this node's copy could lose data. */
  peersNotCurrent: "peers_not_current",
  /** The node, restarted on its derived key, did not become current on every stream in time (the old store is back in place). */
  nodeNotCurrent: "node_not_current",
} as const;
export type AdoptErrorReason = (typeof AdoptErrorReason)[keyof typeof AdoptErrorReason];

/** A refused or failed adoption, with a stable reason beside the message. */
export class AdoptError extends CliError {
  readonly reason: AdoptErrorReason;

  constructor(reason: AdoptErrorReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AdoptError";
    this.reason = reason;
  }
}

/** Options of {@link adoptFirstNode}. */
export interface AdoptFirstNodeOptions {
  /** The promoted bus home (its `cluster.json`, `data/`, `secrets/jetstream.key`). */
  readonly home: HomeLayout;
  /** The node home this node runs from afterwards (`node.key`, `nuk`, `cuk.wrapped`; its store goes to `data/` in it). */
  readonly nodeDir: string;
  /** The node id and cluster name the node home registered with (they must be the record's server and cluster name). */
  readonly nodeId: string;
  readonly clusterName: string;
  readonly bin: string;
  readonly say: (line: string) => void;
  /** The home's JetStream key: opens the old store for the check before anything moves. */
  readonly jetstreamKey: string;
  /** The bus's accounts and authorization, as every node has it. */
  readonly authorization: NatsConfig;
  /** Client port of this node while adopting (loopback, private to the command). */
  readonly port: number;
  /** The node's unlock keys (NUK from the node home, CUK from the join or the recovery secret). Called once, before anything moves. */
  readonly unlock: () => Promise<UnlockKeys>;
  /** How long to wait for peers and for the rebuilt copy to become current. Default 120 s. */
  readonly timeoutMs?: number;
  /** Leave the node running on its new key and return it (tests). Default false. */
  readonly keepRunning?: boolean;
}

/** Outcome of {@link adoptFirstNode}. */
export interface AdoptFirstNodeResult {
  /** Every stream after the rebuild: R3, this node among its current copies. */
  readonly statuses: readonly ReplicaStatus[];
  /** Digests of every stream, read through the cluster after the rebuild (equal to those before it). */
  readonly digests: ReadonlyMap<string, StreamDigest>;
  /** The node, when `keepRunning`, with a maintenance connection private to this process. */
  readonly node?: { readonly node: ClusterNode; readonly nc: NatsConnection };
}

function routeTlsOf(record: ClusterRecord): RouteTls | undefined {
  const t = record.route_tls;
  return t === undefined ? undefined : { certFile: t.cert_file, keyFile: t.key_file, caFile: t.ca_file };
}

async function writeRecord(home: HomeLayout, record: ClusterRecord): Promise<void> {
  await writePrivateFile(join(home.root, CLUSTER_FILE), `${JSON.stringify(record, null, 2)}\n`);
}

/** Overwrites a key file before unlinking it, so the bytes do not linger in a freed block of a simple filesystem. */
async function destroyKeyFile(path: string): Promise<void> {
  const size = (await stat(path)).size;
  const fh = await open(path, "r+");
  try {
    await fh.write(new Uint8Array(size), 0, size, 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await unlink(path);
}

/** Removes `dir` if it is missing or empty (provisioning makes an empty one); false when it holds something. */
async function removeIfEmpty(dir: string): Promise<boolean> {
  try {
    await rmdir(dir);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return true;
    if (code === "ENOTEMPTY" || code === "EEXIST") return false;
    throw err;
  }
}

/**
 * The streams of the account, asked again until `deadline`: right after a
 * node (re)joins, stream info can answer "no leader" or time out for a
 * moment, which is a reason to wait, not yet a verdict.
 */
async function streamsWithin(nc: NatsConnection, deadline: number): Promise<PromotionStep[]> {
  for (;;) {
    try {
      return await planPromotion(nc, REQUIRED_REPLICAS);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

interface ConsumerListPage {
  consumers: { name: string; config: { durable_name?: string } }[] | null;
  total: number;
  error?: { description?: string };
}

interface ConsumerInfoReply {
  config?: { mem_storage?: boolean };
  cluster?: { leader?: string; replicas?: { name: string; current?: boolean; offline?: boolean }[] };
  error?: { description?: string };
}

/**
 * The durable consumers of `stream`, each with whether its state is held by
 * three current copies. A durable's position is state a client relies on; an
 * ephemeral consumer (no durable name) lives only as long as the client that
 * made it, and nats-server keeps it R1 even on an R3 stream, so it is not
 * counted: a rebuilt node may bring it back reset. Each durable is judged
 * from its own info, which its leader answers: a consumer has its own raft
 * group, and a server that does not lead it (the stream's leader answering
 * the list, say) shows its peers as never heard from.
 */
async function durableConsumers(nc: NatsConnection, stream: string): Promise<{ name: string; held: boolean }[]> {
  const names: string[] = [];
  for (let offset = 0; ; ) {
    const page = (await nc.request(`$JS.API.CONSUMER.LIST.${stream}`, JSON.stringify({ offset }), { timeout: 10_000 })).json<ConsumerListPage>();
    if (page.error) throw new CliError(`consumer list ${stream}: ${page.error.description ?? "error"}`);
    const items = page.consumers ?? [];
    for (const c of items) if (c.config.durable_name !== undefined) names.push(c.name);
    offset += items.length;
    if (items.length === 0 || offset >= page.total) break;
  }
  const out: { name: string; held: boolean }[] = [];
  for (const name of names) {
    const info = (await nc.request(`$JS.API.CONSUMER.INFO.${stream}.${name}`, "", { timeout: 10_000 })).json<ConsumerInfoReply>();
    // Deleted since the list, or no leader to answer: not shown held.
    const current = (info.cluster?.replicas ?? []).filter((r) => r.current === true && r.offline !== true).length;
    out.push({ name, held: info.error === undefined && info.config?.mem_storage !== true && info.cluster?.leader !== undefined && current >= REQUIRED_REPLICAS - 1 });
  }
  return out;
}

/** Digests with only the durable consumers' positions: the ones a rebuild must keep. */
function durableOnly(digests: ReadonlyMap<string, StreamDigest>, durables: ReadonlySet<string>): Map<string, StreamDigest> {
  return new Map([...digests].map(([name, d]) => [name, { ...d, consumers: d.consumers.filter((c) => durables.has(`${name} ${c.split(" ")[0] ?? ""}`)) }]));
}

/** The config user's connection to a node started by this command. */
function maintenanceConnection(url: string, user: ReturnType<typeof createIdentity>): Promise<NatsConnection> {
  return connect({ servers: url, name: "unibus-node-adopt", authenticator: nkeyAuthenticator(user.signingKey), maxReconnectAttempts: -1 });
}

/**
 * Checks, on this node started the old way (home key, cluster block), that
 * every stream is R3 with every replica current: only then do the two other
 * copies hold all of it, and this node's copy may be rebuilt from them.
 */
async function checkPeersHoldEverything(
  opts: AdoptFirstNodeOptions,
  record: ClusterRecord,
  user: ReturnType<typeof createIdentity>,
  timeoutMs: number,
): Promise<{ digests: Map<string, StreamDigest>; durables: Set<string> }> {
  const config = clusterNodeConfig(
    {
      dir: opts.home.root,
      serverName: record.server_name,
      clusterName: record.cluster_name,
      listen: record.listen,
      routes: record.routes,
      port: opts.port,
      ...(routeTlsOf(record) === undefined ? {} : { routeTls: routeTlsOf(record) }),
      config: withMaintenanceUser(opts.authorization, user.principal),
    },
    opts.home.jetstreamDir,
  );
  let server: NatsServerProcess;
  try {
    server = await startNatsServer({ config, dir: opts.home.serverDir, bin: opts.bin, name: `nats-server (${record.server_name})`, env: { [JETSTREAM_KEY_ENV]: opts.jetstreamKey } });
  } catch (err) {
    if (err instanceof NatsServerStartError) throw new CliError(`nats-server (${record.server_name}) did not start on the home's store: ${err.message}`, { cause: err });
    throw err;
  }
  const nc = await maintenanceConnection(server.url, user);
  try {
    const deadline = Date.now() + timeoutMs;
    await waitForPeers(nc, REQUIRED_REPLICAS, timeoutMs);
    const plan = await streamsWithin(nc, deadline);
    const low = plan.filter((s) => s.from < REQUIRED_REPLICAS);
    if (low.length > 0) {
      throw new AdoptError(
        AdoptErrorReason.notReplicated,
        `${low.length} streams are below R${REQUIRED_REPLICAS} (${low.slice(0, 5).map((s) => `${s.stream} R${s.from}`).join(", ")}): this node may hold their only copy. ` +
          "Run unibus cluster promote first; nothing was changed",
      );
    }
    const streams = plan.map((s) => s.stream);
    try {
      await waitForCurrentReplicas(nc, streams, REQUIRED_REPLICAS, Math.max(1_000, deadline - Date.now()));
    } catch (err) {
      if (err instanceof PromoteError && err.reason === PromoteErrorReason.notCurrent) {
        throw new AdoptError(AdoptErrorReason.peersNotCurrent, `the other replicas are not all current, so this node's copy cannot be rebuilt from them: ${err.message}; nothing was changed`, { cause: err });
      }
      throw err;
    }
    const durables = new Set<string>();
    let unheld: string[] = [];
    // Like the streams above, within the deadline: a peer that just came
    // back is current for its streams a moment before its consumers are.
    for (;;) {
      durables.clear();
      unheld = [];
      for (const stream of streams) {
        for (const c of await durableConsumers(nc, stream)) {
          durables.add(`${stream} ${c.name}`);
          if (!c.held) unheld.push(`${stream} > ${c.name}`);
        }
      }
      if (unheld.length === 0 || Date.now() >= deadline) break;
      await sleep(250);
    }
    if (unheld.length > 0) {
      throw new AdoptError(
        AdoptErrorReason.notReplicated,
        `${unheld.length} durable consumers are not held by ${REQUIRED_REPLICAS} current copies (${unheld.slice(0, 5).join(", ")}): their positions could be lost with this node's copy; nothing was changed`,
      );
    }
    opts.say(`${streams.length} streams and ${durables.size} durable consumers at R${REQUIRED_REPLICAS} with every replica current: the peers hold everything`);
    return { digests: await digestAll(nc, streams), durables };
  } catch (err) {
    if (err instanceof AdoptError) throw err;
    // No quorum, a stream without a leader, an API that does not answer: nothing proves the peers hold everything.
    throw new AdoptError(AdoptErrorReason.peersNotCurrent, `the cluster could not show that the other replicas hold every stream: ${(err as Error).message}; nothing was changed`, { cause: err });
  } finally {
    await nc.close().catch(() => undefined);
    await server.stop();
  }
}

/** Waits until every stream is R3, current, and lists `serverName` among its current copies. */
async function waitForNodeCurrent(nc: NatsConnection, streams: readonly string[], serverName: string, timeoutMs: number): Promise<ReplicaStatus[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = Math.max(1_000, deadline - Date.now());
    const statuses = await waitForCurrentReplicas(nc, streams, REQUIRED_REPLICAS, left);
    const missing = statuses.filter((s) => !s.currentNodes.includes(serverName));
    if (missing.length === 0) return statuses;
    if (Date.now() > deadline) {
      throw new PromoteError(PromoteErrorReason.notCurrent, `${serverName} holds no current copy of ${missing.length} streams: ${missing.slice(0, 5).map((s) => s.stream).join(", ")}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface JszStreams {
  account_details?: { name: string; stream_detail?: { name: string; state?: { messages?: number; last_seq?: number } }[] }[];
}

/**
 * Waits until this node's own copy of every stream (its monitoring port,
 * not the leader's view of it) holds as many messages, up to the same last
 * sequence, as the leader reports: the leader can count a follower current
 * a moment before that follower has applied what it received.
 */
async function waitForLocalCopies(nc: NatsConnection, monitorPort: number, streams: readonly string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let behind: string[] = [...streams];
  for (;;) {
    const leaderState = new Map<string, { messages: number; last_seq: number }>();
    for (const stream of streams) {
      const info = (await nc.request(`$JS.API.STREAM.INFO.${stream}`, undefined, { timeout: 10_000 }).catch(() => undefined))?.json<{ state?: { messages: number; last_seq: number } }>();
      if (info?.state !== undefined) leaderState.set(stream, info.state);
    }
    const local = await fetch(`http://127.0.0.1:${monitorPort}/jsz?accounts=true&streams=true`, { signal: AbortSignal.timeout(5_000) })
      .then((r) => r.json() as Promise<JszStreams>)
      .catch((): JszStreams => ({}));
    const copies = new Map((local.account_details ?? []).flatMap((a) => (a.name === APP_ACCOUNT ? (a.stream_detail ?? []) : [])).map((d) => [d.name, d.state]));
    behind = streams.filter((s) => {
      const want = leaderState.get(s);
      const have = copies.get(s);
      return want === undefined || have === undefined || have.messages !== want.messages || have.last_seq !== want.last_seq;
    });
    if (behind.length === 0) return;
    if (Date.now() > deadline) throw new PromoteError(PromoteErrorReason.notCurrent, `this node's own copy of ${behind.length} streams differs from the leader's: ${behind.slice(0, 5).join(", ")}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * Moves the first node of a promoted home onto its own derived store key
 * (NUK ⊕ CUK, as every joined node), so no node's store opens with a key on
 * its own disk. nats-server's `prev_key` rotation is not used: on 2.15.1 it
 * drops every durable consumer. The node's copy is rebuilt from its peers
 * instead: checked R3 and current first (else refused, nothing changed), the
 * home's store moved aside, the node started under the same server name on
 * an empty store in the node home with the derived key, and the old store
 * and key file deleted only once this node holds a current copy of every
 * stream. A failure while catching up puts the old store back; a killed run
 * is resumed by running it again (the moved store is still there).
 *
 * The caller holds the home lock, with the bus stopped.
 */
export async function adoptFirstNode(opts: AdoptFirstNodeOptions): Promise<AdoptFirstNodeResult> {
  const { home, say } = opts;
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const record = await adoptableRecord(opts);
  const retired = `${home.jetstreamDir}${RETIRED_SUFFIX}`;
  const user = createIdentity({ label: "node-adopt" });
  const resuming = await fileExists(retired);
  let before: { digests: Map<string, StreamDigest>; durables: Set<string> } | undefined;
  if (resuming) {
    say(`resuming: ${retired} holds this home's store`);
  } else {
    before = await checkPeersHoldEverything(opts, record, user, timeoutMs);
  }
  // The keys come before anything moves: a refused join changes nothing.
  let keys: UnlockKeys;
  try {
    keys = await opts.unlock();
  } catch (err) {
    throw new CliError(`cannot unlock node ${record.server_name}: ${(err as Error).message}; nothing was changed`, { cause: err });
  }
  if (!resuming) {
    await rename(home.jetstreamDir, retired);
    say(`moved this home's store to ${retired} (kept until the rebuilt copy is current)`);
  }
  // From here `unibus up` refuses the home: its store is aside, and starting it would open none of it.
  await writeRecord(home, { ...record, node_home: opts.nodeDir });

  let node: ClusterNode | undefined;
  let nc: NatsConnection | undefined;
  const monitorPort = await freePort("127.0.0.1");
  try {
    node = await startClusterNode({
      dir: opts.nodeDir,
      serverName: record.server_name,
      clusterName: record.cluster_name,
      listen: record.listen,
      routes: record.routes,
      port: opts.port,
      monitorPort,
      ...(routeTlsOf(record) === undefined ? {} : { routeTls: routeTlsOf(record) }),
      config: withMaintenanceUser(opts.authorization, user.principal),
      bin: opts.bin,
      unlock: () => Promise.resolve(keys),
    });
    nc = await maintenanceConnection(node.server.url, user);
    say(`${record.server_name} started on its derived key with an empty store in ${node.storeDir}; waiting for it to catch up from its peers`);
    const deadline = Date.now() + timeoutMs;
    await waitForPeers(nc, REQUIRED_REPLICAS, timeoutMs);
    const streams = (await streamsWithin(nc, deadline)).map((s) => s.stream);
    let statuses: ReplicaStatus[];
    try {
      statuses = await waitForNodeCurrent(nc, streams, record.server_name, Math.max(1_000, deadline - Date.now()));
      await waitForLocalCopies(nc, monitorPort, streams, Math.max(1_000, deadline - Date.now()));
    } catch (err) {
      if (err instanceof PromoteError) throw new AdoptError(AdoptErrorReason.nodeNotCurrent, `the rebuilt copy did not become current: ${err.message}`, { cause: err });
      throw err;
    }
    const after = await digestAll(nc, streams);
    if (before !== undefined) assertSameDigests(durableOnly(before.digests, before.durables), durableOnly(after, before.durables), "rebuild of the first node");
    say(`${statuses.length} streams current on ${record.server_name}; deleting ${retired} and ${home.jetstreamKeyFile}`);
    await rm(retired, { recursive: true, force: true });
    await removeIfEmpty(home.jetstreamDir);
    if (await fileExists(home.jetstreamKeyFile)) await destroyKeyFile(home.jetstreamKeyFile);
    await writeRecord(home, { ...record, node_home: opts.nodeDir, adopted_at: new Date().toISOString() });
    if (opts.keepRunning === true) {
      const kept = { node, nc };
      node = undefined;
      nc = undefined;
      return { statuses, digests: after, node: kept };
    }
    return { statuses, digests: after };
  } catch (err) {
    // The rebuilt copy is not proven current: the home's own store stays the one to run.
    await nc?.close().catch(() => undefined);
    nc = undefined;
    await node?.server.stop();
    node = undefined;
    if ((await fileExists(retired)) && (await removeIfEmpty(home.jetstreamDir))) {
      await rename(retired, home.jetstreamDir);
      await writeRecord(home, record);
      say(`put this home's store back in ${home.jetstreamDir}: unibus up runs it as before`);
    }
    throw err;
  } finally {
    keys.nuk.fill(0);
    keys.cuk.fill(0);
    await nc?.close().catch(() => undefined);
    await node?.server.stop();
  }
}

/**
 * The home's cluster record, if this home may be adopted into `opts.nodeDir`
 * as `opts.nodeId`; checked before anything is provisioned or started.
 *
 * @throws AdoptError `not_promoted`, `already_adopted`, `not_replicated` or `node_mismatch`.
 */
export async function adoptableRecord(opts: Pick<AdoptFirstNodeOptions, "home" | "nodeDir" | "nodeId" | "clusterName">): Promise<ClusterRecord> {
  const { home } = opts;
  const record = await readClusterRecord(home);
  if (record === undefined) throw new AdoptError(AdoptErrorReason.notPromoted, `${home.root} is not a cluster node (no ${CLUSTER_FILE}): run unibus cluster promote first`);
  if (record.adopted_at !== undefined) throw new AdoptError(AdoptErrorReason.alreadyAdopted, `this node already runs from ${record.node_home ?? "its node home"} on its own key (adopted ${record.adopted_at})`);
  if (record.replicas < REQUIRED_REPLICAS) {
    throw new AdoptError(AdoptErrorReason.notReplicated, `${CLUSTER_FILE} records R${record.replicas}: this node's copy can only be rebuilt from peers at R${REQUIRED_REPLICAS}; nothing was changed`);
  }
  if (opts.nodeId !== record.server_name || opts.clusterName !== record.cluster_name) {
    // `node start` names the server after the node id: another name would be a new peer, and this node's replicas would stay missing.
    throw new AdoptError(
      AdoptErrorReason.nodeMismatch,
      `the node home registered ${opts.nodeId} in cluster ${opts.clusterName}, but this home is ${record.server_name} in ${record.cluster_name}: register the node with the id ${record.server_name}; nothing was changed`,
    );
  }
  if (record.node_home !== undefined && record.node_home !== opts.nodeDir) {
    throw new AdoptError(AdoptErrorReason.nodeMismatch, `an earlier adoption of this home used the node home ${record.node_home}, not ${opts.nodeDir}; nothing was changed`);
  }
  return record;
}
