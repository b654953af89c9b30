import type { NatsConnection } from "@nats-io/transport-node";
import type { RequiredStream } from "./bus.js";

/** One readiness check's outcome. */
export interface CheckResult {
  /** `nats`, `jetstream`, `bucket:<name>` or `service:<name>`. */
  readonly name: string;
  readonly ok: boolean;
  /** Why it failed, for operators; never a secret. */
  readonly detail?: string;
}

/** A bucket's stream as its leader reports it. */
export interface BucketPosture {
  readonly name: string;
  readonly stream: string;
  readonly replicas: number | null;
  readonly leader: string | null;
  /** Replicas (leader included) caught up with the leader. */
  readonly current: number;
  readonly ok: boolean;
}

/** A service as micro PING sees it. */
export interface ServicePosture {
  readonly name: string;
  readonly instances: number;
  readonly versions: string[];
}

/** What nats-server's monitoring endpoint says about itself. */
export interface ServerPosture {
  readonly version: string | null;
  readonly mode: "single" | "cluster" | null;
  readonly cluster_size: number | null;
  readonly meta_leader: string | null;
  readonly tls: { readonly client: boolean | null; readonly route: boolean | null };
  readonly sync_policy: string | null;
}

/** Readiness: every check passed. */
export interface Readiness {
  readonly ready: boolean;
  readonly checks: CheckResult[];
  readonly buckets: BucketPosture[];
  readonly services: ServicePosture[];
}

/** What the probe checks and where. */
export interface ProbeOptions {
  readonly streams: readonly RequiredStream[];
  readonly services: readonly string[];
  /** nats-server monitoring base URLs (`http://host:8222`); empty = the server fields stay null. */
  readonly monitorUrls: readonly string[];
  /** Per request; default 2 s. A check that does not answer in time fails. */
  readonly timeoutMs?: number;
}

interface StreamInfoReply {
  error?: { code?: number; description?: string };
  config?: { num_replicas?: number };
  cluster?: { leader?: string; replicas?: { name?: string; current?: boolean; offline?: boolean }[] };
}

interface PingReply {
  name?: string;
  id?: string;
  version?: string;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function jetStreamCheck(nc: NatsConnection, timeout: number): Promise<CheckResult> {
  try {
    const info = (await nc.request("$JS.API.INFO", undefined, { timeout })).json<{ error?: { description?: string } }>();
    if (info.error !== undefined) return { name: "jetstream", ok: false, detail: info.error.description ?? "JetStream API error" };
    return { name: "jetstream", ok: true };
  } catch (err) {
    // No answer at all: in a cluster, no meta leader (quorum lost).
    return { name: "jetstream", ok: false, detail: message(err) };
  }
}

/**
 * A bucket is ready only with a leader and every replica current: a replica
 * that is offline or behind could be elected with writes missing, or means
 * one more loss costs quorum (fail closed: "may lag" is "not ready").
 */
async function bucketCheck(nc: NatsConnection, s: RequiredStream, timeout: number): Promise<BucketPosture & { detail?: string }> {
  const base = { name: s.bucket, stream: s.stream };
  let info: StreamInfoReply;
  try {
    info = (await nc.request(`$JS.API.STREAM.INFO.${s.stream}`, undefined, { timeout })).json<StreamInfoReply>();
  } catch (err) {
    return { ...base, replicas: null, leader: null, current: 0, ok: false, detail: message(err) };
  }
  if (info.error !== undefined) return { ...base, replicas: null, leader: null, current: 0, ok: false, detail: info.error.description ?? "stream info error" };
  const replicas = info.config?.num_replicas ?? 1;
  const leader = info.cluster?.leader ?? null;
  const followers = info.cluster?.replicas ?? [];
  const currentFollowers = followers.filter((r) => r.current === true && r.offline !== true).length;
  const current = (leader === null ? 0 : 1) + currentFollowers;
  // A standalone server reports no cluster leader: its single copy is the leader.
  const standalone = replicas === 1 && info.cluster?.replicas === undefined;
  const ok = standalone || (leader !== null && current >= replicas);
  const posture = { ...base, replicas, leader, current: standalone ? 1 : current, ok };
  return ok ? posture : { ...posture, detail: leader === null ? "no stream leader" : `${current} of ${replicas} replicas current` };
}

interface MetaView {
  clustered: boolean;
  leader: string | null;
}

async function metaViewOf(base: string, timeout: number): Promise<MetaView | null> {
  try {
    const [varz, jsz] = await Promise.all([getJson<Varz>(`${base}/varz`, timeout), getJson<Jsz>(`${base}/jsz`, timeout)]);
    return { clustered: varz.cluster?.name !== undefined && varz.cluster.name !== "", leader: jsz.meta_cluster?.leader || null };
  } catch {
    return null;
  }
}

/**
 * The JetStream meta leader from the nodes' monitoring ports. A node cut off
 * from the others can still answer `$JS.API.INFO` from its own state, so in
 * a cluster a majority of the configured nodes must be reachable and all
 * reachable ones must name the same leader (quorum, seen from outside).
 */
async function metaLeaderCheck(monitorUrls: readonly string[], timeout: number): Promise<CheckResult> {
  const views = await Promise.all(monitorUrls.map((u) => metaViewOf(u, timeout)));
  const reachable = views.filter((v): v is MetaView => v !== null);
  if (reachable.length === 0) return { name: "meta_leader", ok: false, detail: "no monitoring endpoint answered" };
  if (reachable.every((v) => !v.clustered)) return { name: "meta_leader", ok: true };
  if (reachable.length * 2 <= monitorUrls.length) return { name: "meta_leader", ok: false, detail: `${reachable.length} of ${monitorUrls.length} nodes reachable` };
  const leaders = new Set(reachable.map((v) => v.leader));
  const [leader] = leaders;
  if (leaders.size !== 1 || leader === null || leader === undefined) return { name: "meta_leader", ok: false, detail: "nodes do not agree on a meta leader" };
  return { name: "meta_leader", ok: true };
}

/** Micro PING to every instance of `name`: replies gather until they stall, within the timeout. */
async function pingService(nc: NatsConnection, name: string, timeout: number): Promise<ServicePosture> {
  const replies: PingReply[] = [];
  try {
    const iter = await nc.requestMany(`$SRV.PING.${name}`, undefined, { maxWait: timeout, strategy: "stall", stall: 300 });
    for await (const m of iter) {
      try {
        replies.push(m.json<PingReply>());
      } catch {
        // An unreadable reply is no instance.
      }
    }
  } catch {
    // No responders: zero instances.
  }
  const ids = new Set(replies.filter((r) => r.name === name).map((r) => r.id));
  const versions = [...new Set(replies.filter((r) => r.name === name).map((r) => r.version ?? "unknown"))].sort();
  return { name, instances: ids.size, versions };
}

/**
 * Runs every readiness check at once (connection, JetStream API, the meta
 * leader when monitoring URLs are given, each bucket's leader and replicas, each required service's PING) and
 * reports them all, so one failing check does not hide the others.
 */
export async function checkReadiness(nc: NatsConnection, opts: ProbeOptions): Promise<Readiness> {
  const timeout = opts.timeoutMs ?? 2_000;
  if (nc.isClosed()) {
    return { ready: false, checks: [{ name: "nats", ok: false, detail: "connection closed" }], buckets: [], services: [] };
  }
  const [js, meta, buckets, services] = await Promise.all([
    jetStreamCheck(nc, timeout),
    opts.monitorUrls.length > 0 ? metaLeaderCheck(opts.monitorUrls, timeout) : undefined,
    Promise.all(opts.streams.map((s) => bucketCheck(nc, s, timeout))),
    Promise.all(opts.services.map((n) => pingService(nc, n, timeout))),
  ]);
  const checks: CheckResult[] = [
    { name: "nats", ok: true },
    js,
    ...(meta === undefined ? [] : [meta]),
    ...buckets.map((b): CheckResult => (b.ok ? { name: `bucket:${b.name}`, ok: true } : { name: `bucket:${b.name}`, ok: false, detail: b.detail ?? "not ready" })),
    ...services.map((s): CheckResult => (s.instances > 0 ? { name: `service:${s.name}`, ok: true } : { name: `service:${s.name}`, ok: false, detail: "no instance answered PING" })),
  ];
  return {
    ready: checks.every((c) => c.ok),
    checks,
    buckets: buckets.map(({ name, stream, replicas, leader, current, ok }) => ({ name, stream, replicas, leader, current, ok })),
    services,
  };
}

interface Varz {
  version?: string;
  tls_required?: boolean;
  cluster?: { name?: string; tls_required?: boolean };
  jetstream?: { config?: { sync_always?: boolean; sync_interval?: number } };
}

interface Jsz {
  meta_cluster?: { leader?: string; cluster_size?: number };
}

async function getJson<T>(url: string, timeout: number): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeout) });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return (await res.json()) as T;
}

const UNKNOWN_SERVER: ServerPosture = { version: null, mode: null, cluster_size: null, meta_leader: null, tls: { client: null, route: null }, sync_policy: null };

function syncPolicy(config: { sync_always?: boolean; sync_interval?: number } | undefined): string | null {
  if (config === undefined) return null;
  if (config.sync_always === true) return "always";
  return config.sync_interval === undefined ? null : `${Math.round(config.sync_interval / 1e9)}s`;
}

/**
 * The server's own view from its monitoring port (`/varz`, `/jsz`): what the
 * JetStream API does not tell an account user (meta leader, TLS on client
 * and route ports, fsync policy). The first URL that answers is used; none
 * answering leaves every field null (unknown), never a guess.
 */
export async function serverPosture(monitorUrls: readonly string[], timeoutMs = 2_000): Promise<ServerPosture> {
  for (const base of monitorUrls) {
    try {
      const [varz, jsz] = await Promise.all([getJson<Varz>(`${base}/varz`, timeoutMs), getJson<Jsz>(`${base}/jsz`, timeoutMs)]);
      const clustered = varz.cluster?.name !== undefined && varz.cluster.name !== "";
      return {
        version: varz.version ?? null,
        mode: clustered ? "cluster" : "single",
        cluster_size: clustered ? (jsz.meta_cluster?.cluster_size ?? null) : 1,
        meta_leader: jsz.meta_cluster?.leader || null,
        tls: { client: varz.tls_required === true, route: clustered ? varz.cluster?.tls_required === true : null },
        sync_policy: syncPolicy(varz.jetstream?.config),
      };
    } catch {
      // Try the next node.
    }
  }
  return UNKNOWN_SERVER;
}
