import { readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { createIdentity, nkeyAuthenticator } from "@unibus/crypto";
import { EnvRef, NatsServerStartError, mergeNatsConfig, startNatsServer } from "@unibus/natsd";
import type { NatsConfig, NatsConfigValue, NatsServerProcess } from "@unibus/natsd";
import { CliError } from "../errors.js";
import { ensurePrivateDir, writePrivateFile } from "../home.js";
import type { HomeLayout } from "../home.js";
import { assertAllStreamsLoaded, assertSameDigests, digestAll, snapshotStream, startMaintenanceServer } from "../store/maintenance.js";
import type { StreamDigest } from "../store/maintenance.js";
import { fileExists } from "../up/provision.js";
import { JETSTREAM_KEY_ENV, SYNC_ALWAYS } from "../up/server-config.js";
import type { RouteTls } from "./node.js";
import { clusterNodeConfig } from "./node.js";
import { PEER_PROBE_PREFIX, describeStep, planPromotion, promoteStreams } from "./promote.js";
import type { PromotionResult, PromotionStep } from "./promote.js";

/** File in the home recording that it is a cluster node (read by `unibus up` and the services' replica count). */
export const CLUSTER_FILE = "cluster.json";
/** Where the standalone store is kept after its streams were copied into the cluster: the way back. */
export const STANDALONE_SUFFIX = ".standalone";

/** What a converted home records about its cluster (no secret in it). */
export interface ClusterRecord {
  readonly version: 1;
  readonly cluster_name: string;
  readonly server_name: string;
  readonly listen: string;
  readonly routes: readonly string[];
  /** Replicas of every bucket and stream: services create new ones with it. */
  readonly replicas: number;
  /** Route mutual-TLS files (paths, not secrets), when the routes use TLS. */
  readonly route_tls?: { readonly cert_file: string; readonly key_file: string; readonly ca_file: string };
  readonly promoted_at: string;
  /**
   * Set by `unibus node adopt`: this node's server runs from that node home
   * (`unibus node start`) on its derived key, and the home's own store and
   * key are retired. `unibus up` and `cluster promote` refuse such a home.
   */
  readonly node_home?: string;
  /** When the adoption finished (the old store and key file deleted). */
  readonly adopted_at?: string;
}

/** Reads the home's cluster record, or undefined for a single-node home. */
export async function readClusterRecord(home: HomeLayout): Promise<ClusterRecord | undefined> {
  const path = join(home.root, CLUSTER_FILE);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  let parsed: Partial<ClusterRecord>;
  try {
    parsed = JSON.parse(text) as Partial<ClusterRecord>;
  } catch (err) {
    throw new CliError(`${path} is damaged: not JSON`, { cause: err });
  }
  if (parsed.version !== 1 || typeof parsed.cluster_name !== "string" || typeof parsed.replicas !== "number" || !Array.isArray(parsed.routes)) {
    throw new CliError(`${path} is damaged: expected a version 1 cluster record`);
  }
  return parsed as ClusterRecord;
}

/** Options of {@link promoteHome}. */
export interface PromoteHomeOptions {
  readonly home: HomeLayout;
  readonly bin: string;
  readonly say: (line: string) => void;
  /** The home's JetStream key (it stays this node's key). */
  readonly jetstreamKey: string;
  /** The bus's accounts and authorization (`calloutAuthorization` of the home), as every node has it. */
  readonly authorization: NatsConfig;
  readonly clusterName: string;
  readonly serverName: string;
  /** Route listen address of this node, `host:port`. */
  readonly listen: string;
  /** Route URLs of the two (or more) other nodes. */
  readonly routes: readonly string[];
  /** Client port of this node while promoting (and host, default 127.0.0.1). */
  readonly port: number;
  readonly host?: string;
  readonly routeTls?: RouteTls;
  /** Target replicas. Default 3. */
  readonly replicas?: number;
  /** List what would change and change nothing. */
  readonly dryRun?: boolean;
  /** How long to wait for the other nodes and for followers to become current. Default 120 s. */
  readonly timeoutMs?: number;
  /** Leave this node running and return it (tests, and a caller that goes on serving). Default false. */
  readonly keepRunning?: boolean;
}

/** Outcome of {@link promoteHome}. */
export interface PromoteHomeResult {
  /** True when the standalone store was copied into the cluster on this run. */
  readonly converted: boolean;
  readonly plan: readonly PromotionStep[];
  readonly promotion?: PromotionResult;
  /** Digests of every stream before and after: equal, or the promotion failed. */
  readonly digests: ReadonlyMap<string, StreamDigest>;
  /** This node, when `keepRunning`; its `nc` is a maintenance connection private to this process. */
  readonly node?: { readonly server: NatsServerProcess; readonly nc: NatsConnection };
}

/** Deep copy that keeps `envRef` values as they are (structuredClone would turn them into plain maps). */
function cloneConfig(value: NatsConfigValue): NatsConfigValue {
  if (value instanceof EnvRef || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map(cloneConfig);
  const out: NatsConfig = {};
  for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = cloneConfig(v);
  return out;
}

/**
 * The config user that copies and promotes streams: an nkey that exists only
 * in this process's memory, added to the app account for this run only.
 */
export function withMaintenanceUser(authorization: NatsConfig, nkey: string): NatsConfig {
  const copy = cloneConfig(authorization) as NatsConfig;
  const app = (copy.accounts as Record<string, { users?: { nkey: string }[] } | undefined> | undefined)?.UNIBUS;
  if (app === undefined) throw new CliError("the bus config has no UNIBUS account");
  app.users = [...(app.users ?? []), { nkey }];
  // With the auth callout on, a config user is only exempt from it when listed.
  const callout = (copy.authorization as { auth_callout?: { auth_users?: string[] } } | undefined)?.auth_callout;
  if (callout?.auth_users !== undefined) callout.auth_users = [...callout.auth_users, nkey];
  return copy;
}

/**
 * The JetStream API answers and an R`replicas` stream can be placed: the
 * other nodes are there. Every attempt creates and deletes the same probe
 * stream: a create that timed out here but went through on a slow server is
 * then the stream the next attempt creates again (an identical create
 * succeeds) and deletes, so no probe outlives a successful wait.
 */
export async function waitForPeers(nc: NatsConnection, replicas: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const name = `${PEER_PROBE_PREFIX}${Date.now()}`;
  const config = JSON.stringify({ name, subjects: [`_promote_probe.${name}`], num_replicas: replicas, storage: "memory" });
  for (;;) {
    try {
      const created = (await nc.request(`$JS.API.STREAM.CREATE.${name}`, config, { timeout: 2_000 })).json<{ error?: unknown }>();
      if (!created.error) {
        const deleted = (await nc.request(`$JS.API.STREAM.DELETE.${name}`, undefined, { timeout: 5_000 })).json<{ error?: unknown }>();
        if (!deleted.error) return;
      }
    } catch {
      // No meta leader yet (the JS API does not answer), or a slow answer: try again.
    }
    if (Date.now() > deadline) throw new CliError(`the cluster did not form with ${replicas} JetStream peers within ${timeoutMs / 1000} s: are the other nodes up, with routes to this one?`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * Digests with the first sequence of empty streams cleared: a restored empty
 * stream reports first_seq 1 where the original said 0, and no message can
 * differ in a stream that has none.
 */
function comparable(digests: ReadonlyMap<string, StreamDigest>): Map<string, StreamDigest> {
  return new Map([...digests].map(([name, d]) => [name, d.messages === 0 ? { ...d, firstSeq: 0 } : d]));
}

/** A restore's first chunk can beat the route interest of the server that took the restore: no responders, nothing received. */
const RESTORE_INTEREST_BUDGET_MS = 10_000;

function isNoResponders(err: unknown): boolean {
  const e = err as { name?: string; message?: string; cause?: { name?: string } } | undefined;
  return e?.name === "NoRespondersError" || e?.cause?.name === "NoRespondersError" || /no responders/i.test(e?.message ?? "");
}

async function sendChunk(nc: NatsConnection, subject: string, data: Uint8Array | undefined, stream: string, timeout: number): Promise<void> {
  const deadline = Date.now() + RESTORE_INTEREST_BUDGET_MS;
  for (;;) {
    let reply: Msg;
    try {
      reply = await nc.request(subject, data, { timeout });
    } catch (err) {
      // No responders means the chunk reached nobody, so sending it again cannot duplicate it.
      if (isNoResponders(err) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      throw err;
    }
    if (reply.data.length === 0) return;
    const parsed = reply.json<{ error?: { description?: string } }>();
    if (parsed.error) throw new CliError(`restore of ${stream} into the cluster failed: ${parsed.error.description ?? "error"}`);
    return;
  }
}

/**
 * Copies `stream` from the standalone store into the cluster through the
 * snapshot/restore API, the path `unibus store backup|restore` takes.
 */
function sameDigest(a: StreamDigest, b: StreamDigest): boolean {
  return JSON.stringify(comparable(new Map([["s", a]])).get("s")) === JSON.stringify(comparable(new Map([["s", b]])).get("s"));
}

/** The digest of `stream` in the cluster, or undefined when the cluster has no such stream. */
async function clusterDigest(nc: NatsConnection, stream: string): Promise<StreamDigest | undefined> {
  const info = (await nc.request(`$JS.API.STREAM.INFO.${stream}`, undefined, { timeout: 10_000 })).json<{ error?: { code?: number; err_code?: number; description?: string } }>();
  if (info.error?.code === 404) return undefined;
  if (info.error) throw new CliError(`stream info ${stream} in the cluster: ${info.error.description ?? "error"}`);
  return (await digestAll(nc, [stream])).get(stream);
}

async function copyStream(src: NatsConnection, dst: NatsConnection, stream: string): Promise<void> {
  let deliver: string | undefined;
  await snapshotStream(
    src,
    stream,
    async (meta) => {
      const reply = (await dst.request(`$JS.API.STREAM.RESTORE.${stream}`, JSON.stringify({ config: meta.config, state: meta.state }), { timeout: 30_000 })).json<{
        deliver_subject?: string;
        error?: { description?: string };
      }>();
      if (reply.error || reply.deliver_subject === undefined) throw new CliError(`restore of ${stream} into the cluster refused: ${reply.error?.description ?? "no deliver subject"}`);
      deliver = reply.deliver_subject;
    },
    (chunk) => sendChunk(dst, deliver!, chunk, stream, 30_000),
  );
  await sendChunk(dst, deliver!, undefined, stream, 120_000);
}

async function startNode(opts: PromoteHomeOptions, nkey: string): Promise<NatsServerProcess> {
  const config = clusterNodeConfig(
    {
      dir: opts.home.root,
      serverName: opts.serverName,
      clusterName: opts.clusterName,
      listen: opts.listen,
      routes: opts.routes,
      port: opts.port,
      ...(opts.host === undefined ? {} : { host: opts.host }),
      ...(opts.routeTls === undefined ? {} : { routeTls: opts.routeTls }),
      config: withMaintenanceUser(opts.authorization, nkey),
    },
    opts.home.jetstreamDir,
  );
  try {
    return await startNatsServer({ config, dir: opts.home.serverDir, bin: opts.bin, name: `nats-server (${opts.serverName})`, env: { [JETSTREAM_KEY_ENV]: opts.jetstreamKey } });
  } catch (err) {
    if (err instanceof NatsServerStartError) throw new CliError(`nats-server (${opts.serverName}) did not start: ${err.message}`, { cause: err });
    throw err;
  }
}

/**
 * Turns a stopped single-node home into the first node of a cluster and
 * raises every stream to `replicas`. nats-server 2.15 does not adopt the
 * streams of a standalone store into a cluster's meta layer: restarted with a
 * cluster block it loads them, finds no assignment, and deletes them as
 * orphans about 30 s later. So the standalone store is moved aside (never
 * deleted: it is the way back), this node starts on a fresh store with the
 * cluster block, and each stream is copied in through the snapshot/restore
 * API (as `unibus store backup|restore` does), checked against a digest of
 * every message, then raised in place from R1 with a stream update, and
 * reported only once every follower is current.
 *
 * A home that is already a cluster node only gets the promotion. The caller
 * holds the home lock, with the bus stopped.
 */
export async function promoteHome(opts: PromoteHomeOptions): Promise<PromoteHomeResult> {
  const { home, say } = opts;
  const replicas = opts.replicas ?? 3;
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const standalone = `${home.jetstreamDir}${STANDALONE_SUFFIX}`;
  const record = await readClusterRecord(home);
  const work = join(home.root, "cluster-promote");
  const user = createIdentity({ label: "cluster-promote" });

  if (opts.dryRun === true && record === undefined) {
    // The standalone store (aside already if an earlier run was interrupted), read by a private server.
    const storeDir = (await fileExists(standalone)) ? standalone : home.jetstreamDir;
    const m = await startMaintenanceServer({ bin: opts.bin, storeDir, workDir: join(work, "dry-run"), keys: { key: opts.jetstreamKey } });
    try {
      await assertAllStreamsLoaded(m, storeDir, "the JetStream key");
      const plan = await planPromotion(m.nc, replicas);
      say(`single-node home: would ${storeDir === standalone ? "resume from" : `move ${home.jetstreamDir} to`} ${standalone}, start ${opts.serverName} in cluster ${opts.clusterName}, copy ${plan.length} streams in`);
      for (const step of plan) say(`would raise ${describeStep(step)}`);
      return { converted: false, plan, digests: await digestAll(m.nc, plan.map((s) => s.stream)) };
    } finally {
      await m.stop();
      await rm(work, { recursive: true, force: true });
    }
  }

  if (record?.node_home !== undefined) {
    throw new CliError(`this home's node runs from the node home ${record.node_home} on its own derived key (unibus node adopt): it has no store of its own to promote`);
  }
  if (record !== undefined && (record.cluster_name !== opts.clusterName || record.server_name !== opts.serverName)) {
    throw new CliError(
      `${join(home.root, CLUSTER_FILE)} says this home is ${record.server_name} in cluster ${record.cluster_name}, ` +
        `not ${opts.serverName} in ${opts.clusterName}: nothing was changed`,
    );
  }
  await ensurePrivateDir(work);
  // Every early failure leaves no scratch dir behind (the try below removes it from then on).
  let source: Awaited<ReturnType<typeof startMaintenanceServer>> | undefined;
  let before: Map<string, StreamDigest> | undefined;
  let server: NatsServerProcess | undefined;
  let nc: NatsConnection | undefined;
  try {
    if (record === undefined) {
      if (await fileExists(standalone)) {
        // An interrupted conversion: the original is aside. data/ is this node's cluster
        // state (its peers may know it already), so it is kept; streams copied in full are
        // recognised by their digests below, a half-done restore is dropped by the server.
        say(`resuming: ${standalone} holds the original store`);
      } else {
        // Fail before anything moves: a key that does not open every stream stops here.
        const check = await startMaintenanceServer({ bin: opts.bin, storeDir: home.jetstreamDir, workDir: join(work, "check"), keys: { key: opts.jetstreamKey } });
        try {
          await assertAllStreamsLoaded(check, home.jetstreamDir, "the JetStream key");
        } finally {
          await check.stop();
        }
        await rename(home.jetstreamDir, standalone);
        say(`moved the standalone store to ${standalone} (kept until you delete it)`);
      }
      source = await startMaintenanceServer({ bin: opts.bin, storeDir: standalone, workDir: join(work, "source"), keys: { key: opts.jetstreamKey } });
    }
    if (source !== undefined) {
      const streams = await assertAllStreamsLoaded(source, standalone, "the JetStream key");
      before = await digestAll(source.nc, streams);
    }
    await ensurePrivateDir(home.jetstreamDir);
    server = await startNode(opts, user.principal);
    nc = await connect({ servers: server.url, name: "unibus-cluster-promote", authenticator: nkeyAuthenticator(user.signingKey), maxReconnectAttempts: -1 });
    say(`${opts.serverName} started in cluster ${opts.clusterName}; waiting for ${replicas} JetStream peers`);
    await waitForPeers(nc, replicas, timeoutMs);

    if (source !== undefined && before !== undefined) {
      for (const [stream, digest] of before) {
        const existing = await clusterDigest(nc, stream);
        if (existing === undefined) {
          await copyStream(source.nc, nc, stream);
        } else if (sameDigest(existing, digest)) {
          say(`${stream}: already copied by an earlier run, identical`);
        } else {
          throw new CliError(
            `stream ${stream} already exists in the cluster and differs from ${standalone}: an earlier run left it half copied, or the cluster holds other data. ` +
              "Nothing was changed; remove that stream from the cluster (nats stream rm) and run the promotion again.",
          );
        }
      }
      assertSameDigests(comparable(before), comparable(await digestAll(nc, [...before.keys()])), "copy into the cluster");
      say(`copied ${before.size} streams into the cluster, every message checked`);
      await source.stop();
      source = undefined;
    }

    if (opts.dryRun === true) {
      const plan = await planPromotion(nc, replicas);
      for (const step of plan) say(`would raise ${describeStep(step)}`);
      return { converted: false, plan, digests: await digestAll(nc, plan.map((s) => s.stream)) };
    }

    const baseline = before ?? (await digestAll(nc, (await planPromotion(nc, replicas)).map((s) => s.stream)));
    const promotion = await promoteStreams(nc, replicas, timeoutMs);
    for (const step of promotion.steps) say(`raised ${describeStep(step)}`);
    const after = await digestAll(nc, promotion.steps.map((s) => s.stream));
    assertSameDigests(comparable(baseline), comparable(after), "promotion");
    const next: ClusterRecord = {
      version: 1,
      cluster_name: opts.clusterName,
      server_name: opts.serverName,
      listen: opts.listen,
      routes: [...opts.routes],
      replicas,
      ...(opts.routeTls === undefined ? {} : { route_tls: { cert_file: opts.routeTls.certFile, key_file: opts.routeTls.keyFile, ca_file: opts.routeTls.caFile } }),
      promoted_at: new Date().toISOString(),
    };
    await writePrivateFile(join(home.root, CLUSTER_FILE), `${JSON.stringify(next, null, 2)}\n`);
    say(`${promotion.statuses.length} streams at R${replicas}, every follower current (lag 0); recorded in ${join(home.root, CLUSTER_FILE)}`);
    const result: PromoteHomeResult = { converted: source === undefined && before !== undefined, plan: promotion.steps, promotion, digests: after };
    if (opts.keepRunning === true) {
      const kept = { server, nc };
      server = undefined;
      nc = undefined;
      return { ...result, node: kept };
    }
    return result;
  } finally {
    await source?.stop();
    await nc?.close().catch(() => undefined);
    await server?.stop();
    await rm(work, { recursive: true, force: true });
  }
}

/** The config `unibus up` starts a converted home's server with: the bus config plus the recorded cluster block. */
export function clusteredBusConfig(base: NatsConfig, record: ClusterRecord): NatsConfig {
  const tls = record.route_tls;
  return mergeNatsConfig(base, {
    server_name: record.server_name,
    jetstream: { sync_interval: SYNC_ALWAYS },
    cluster: {
      name: record.cluster_name,
      listen: record.listen,
      routes: [...record.routes],
      ...(tls === undefined ? {} : { tls: { ...tls, verify: true, timeout: 5 } }),
    },
  });
}

