import type { NatsConnection } from "@nats-io/transport-node";
import { CliError } from "../errors.js";
import { loadedStreams } from "../store/maintenance.js";

/** What kind of JetStream object a stream backs (by the nats.js naming convention). */
export const StoreKind = {
  kv: "kv",
  objectStore: "object-store",
  stream: "stream",
} as const;
export type StoreKind = (typeof StoreKind)[keyof typeof StoreKind];

/** Stable reasons of a failed promotion. */
export const PromoteErrorReason = {
  /** A replica count outside 1..5 was asked for. */
  badReplicas: "bad_replicas",
  /** The JetStream API refused an update. */
  updateRefused: "update_refused",
  /** Followers did not catch up in time: the promotion is not reported as done. */
  notCurrent: "replicas_not_current",
} as const;
export type PromoteErrorReason = (typeof PromoteErrorReason)[keyof typeof PromoteErrorReason];

/** A failed promotion, with a stable reason beside the message. */
export class PromoteError extends CliError {
  readonly reason: PromoteErrorReason;

  constructor(reason: PromoteErrorReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PromoteError";
    this.reason = reason;
  }
}

/** One stream of a promotion plan. */
export interface PromotionStep {
  readonly stream: string;
  readonly kind: StoreKind;
  /** Replicas now. */
  readonly from: number;
  /** Replicas after the promotion (never fewer than now: a promotion never scales down). */
  readonly to: number;
}

/** Where one stream stands after a promotion. */
export interface ReplicaStatus {
  readonly stream: string;
  readonly replicas: number;
  readonly leader: string | undefined;
  /** Followers that are current, online and report lag 0. */
  readonly current: number;
  /** Server names holding a current copy: the leader and every such follower. */
  readonly currentNodes: readonly string[];
}

interface StreamInfoReply {
  config: { name: string; num_replicas?: number } & Record<string, unknown>;
  cluster?: { leader?: string; replicas?: { name: string; current?: boolean; offline?: boolean; lag?: number }[] };
  error?: { code?: number; description?: string };
}

/** Most replicas a JetStream stream can have. */
const MAX_REPLICAS = 5;

function kindOf(stream: string): StoreKind {
  if (stream.startsWith("KV_")) return StoreKind.kv;
  if (stream.startsWith("OBJ_")) return StoreKind.objectStore;
  return StoreKind.stream;
}

async function streamInfo(nc: NatsConnection, stream: string): Promise<StreamInfoReply> {
  const reply = (await nc.request(`$JS.API.STREAM.INFO.${stream}`, undefined, { timeout: 10_000 })).json<StreamInfoReply>();
  if (reply.error) throw new CliError(`stream info ${stream}: ${reply.error.description ?? "error"}`);
  return reply;
}

function assertReplicas(replicas: number): void {
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS) {
    throw new PromoteError(PromoteErrorReason.badReplicas, `replicas must be an integer from 1 to ${MAX_REPLICAS}, got ${replicas}`);
  }
}

/** Names of the throwaway streams the peer wait creates and deletes (`waitForPeers`); a promotion never counts or raises them. */
export const PEER_PROBE_PREFIX = "PROMOTE_PROBE_";

/**
 * Every stream of the account (KV buckets and object stores are streams too)
 * with its replica count now and after a promotion to `replicas`. Streams
 * already at or above `replicas` appear with `to === from`.
 */
export async function planPromotion(nc: NatsConnection, replicas: number): Promise<PromotionStep[]> {
  assertReplicas(replicas);
  const steps: PromotionStep[] = [];
  for (const stream of await loadedStreams(nc)) {
    // A peer probe left by a run killed mid-wait holds nothing of the bus.
    if (stream.startsWith(PEER_PROBE_PREFIX)) continue;
    const from = (await streamInfo(nc, stream)).config.num_replicas ?? 1;
    steps.push({ stream, kind: kindOf(stream), from, to: Math.max(from, replicas) });
  }
  return steps;
}

/**
 * Raises each planned stream in place (`$JS.API.STREAM.UPDATE` with the
 * stream's own config and the new `num_replicas`): the leader keeps serving
 * while the new followers catch up from it, nothing is copied through the
 * client. Steps whose `to` equals `from` are left alone.
 */
export async function applyPromotion(nc: NatsConnection, steps: readonly PromotionStep[]): Promise<number> {
  let changed = 0;
  for (const step of steps) {
    if (step.to <= step.from) continue;
    const { config } = await streamInfo(nc, step.stream);
    const reply = (await nc.request(`$JS.API.STREAM.UPDATE.${step.stream}`, JSON.stringify({ ...config, num_replicas: step.to }), { timeout: 30_000 })).json<StreamInfoReply>();
    if (reply.error) throw new PromoteError(PromoteErrorReason.updateRefused, `raising ${step.stream} to R${step.to}: ${reply.error.description ?? "error"}`);
    changed++;
  }
  return changed;
}

function statusOf(stream: string, info: StreamInfoReply): ReplicaStatus {
  const followers = info.cluster?.replicas ?? [];
  const current = followers.filter((r) => r.current === true && r.offline !== true && (r.lag ?? 0) === 0);
  const leader = info.cluster?.leader || undefined;
  return {
    stream,
    replicas: info.config.num_replicas ?? 1,
    leader,
    current: current.length,
    currentNodes: [...(leader === undefined ? [] : [leader]), ...current.map((r) => r.name)],
  };
}

/**
 * Waits until every stream has a leader and `replicas - 1` followers that are
 * current with lag 0. Only then is a promotion done: a follower still
 * catching up is no copy yet, and losing the old node then would lose data.
 *
 * @throws PromoteError (`replicas_not_current`) naming the streams still behind.
 */
export async function waitForCurrentReplicas(nc: NatsConnection, streams: readonly string[], replicas: number, timeoutMs = 60_000): Promise<ReplicaStatus[]> {
  assertReplicas(replicas);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const statuses: ReplicaStatus[] = [];
    for (const stream of streams) statuses.push(statusOf(stream, await streamInfo(nc, stream).catch(() => ({ config: { name: stream, num_replicas: 0 } }))));
    const behind = statuses.filter((s) => s.replicas < replicas || s.leader === undefined || s.current < replicas - 1);
    if (behind.length === 0) return statuses;
    if (Date.now() > deadline) {
      throw new PromoteError(
        PromoteErrorReason.notCurrent,
        `${behind.length} of ${streams.length} streams have no ${replicas} current replicas after ${timeoutMs / 1000} s: ` +
          behind.slice(0, 5).map((s) => `${s.stream} (R${s.replicas}, leader ${s.leader ?? "none"}, ${s.current} current followers)`).join(", "),
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A promotion's outcome: the plan, how many streams changed, and where each stands. */
export interface PromotionResult {
  readonly steps: readonly PromotionStep[];
  readonly changed: number;
  readonly statuses: readonly ReplicaStatus[];
}

/** Plans, applies and verifies a promotion of every stream to `replicas`. */
export async function promoteStreams(nc: NatsConnection, replicas: number, timeoutMs?: number): Promise<PromotionResult> {
  const steps = await planPromotion(nc, replicas);
  const changed = await applyPromotion(nc, steps);
  const statuses = await waitForCurrentReplicas(
    nc,
    steps.map((s) => s.stream),
    replicas,
    timeoutMs,
  );
  return { steps, changed, statuses };
}

/** One line per step, for `--dry-run` and the report. */
export function describeStep(step: PromotionStep): string {
  return step.to > step.from ? `${step.stream} (${step.kind}): R${step.from} -> R${step.to}` : `${step.stream} (${step.kind}): R${step.from}, unchanged`;
}
