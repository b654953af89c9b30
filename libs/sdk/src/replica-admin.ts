/**
 * The admin side of the cluster lifecycle (contracts/specs/replica-lifecycle.md):
 * find the gateway replicas, create the cluster (init) or hand the seed back
 * after a full restart (recover), and read and verify the history. The seed
 * and the recovery secret are secrets: returned to the caller, never logged.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { ErrorCode, ServiceName, Subjects, UnibusError } from "@unibus/contracts";
import type { ReplicaHistoryReply, ReplicaInitReply, ReplicaRecoverReply } from "@unibus/contracts";
import {
  decodeRecoverySecret,
  deriveClusterKeys,
  encodeRecoverySecret,
  fromHex,
  gatewayAgreementBytes,
  generateClusterSeed,
  isPrincipal,
  publicKeyFromPrincipal,
  sealTo,
  toBase64Url,
  toHex,
  verifyDetached,
} from "@unibus/crypto";
import type { SigningKey } from "@unibus/crypto";
import { verifyClusterHistory } from "./replica-history.js";
import type { ClusterHistoryEntry, HistoryPin, VerifiedClusterHistory } from "./replica-history.js";
import { signedRequest } from "./signed-request.js";

const TIMEOUT_MS = 10_000;
/** Resends when the request reached a replica the seed was not sealed for (one that started after discovery). */
const WRONG_GATEWAY_ROUNDS = 8;

/** A gateway replica as its micro INFO metadata publishes it, signature checked. */
export interface GatewayReplica {
  readonly principal: string;
  readonly agreementKey: Uint8Array;
}

/**
 * The gateway replicas answering `$SRV.INFO` within `waitMs`, each with a
 * per-process agreement key signed by its principal (one that does not
 * verify is left out: the seed is never sealed to an unproven key).
 */
export async function discoverGateways(nc: NatsConnection, waitMs = 750): Promise<GatewayReplica[]> {
  const out = new Map<string, GatewayReplica>();
  const replies = await nc.requestMany(`$SRV.INFO.${ServiceName.replicaGateway}`, undefined, { maxWait: waitMs, strategy: "timer" });
  for await (const m of replies) {
    try {
      const info = m.json<{ metadata?: Record<string, string> }>();
      const principal = info.metadata?.["principal"] ?? "";
      const key = info.metadata?.["agreementKey"] ?? "";
      const sig = info.metadata?.["agreementSig"] ?? "";
      if (!isPrincipal(principal) || !/^[0-9a-f]{64}$/.test(key) || !/^[0-9a-f]{128}$/.test(sig)) continue;
      const agreementKey = fromHex(key);
      if (!verifyDetached(publicKeyFromPrincipal(principal), gatewayAgreementBytes(principal, agreementKey), fromHex(sig))) continue;
      // Keyed by agreement key: replicas of one service may share a principal, and each process needs its own box.
      out.set(key, { principal, agreementKey });
    } catch {
      continue;
    }
  }
  return [...out.values()];
}

function sealSeed(seed: Uint8Array, gateways: readonly GatewayReplica[]): { gateway: string; box: string }[] {
  return gateways.map((g) => ({ gateway: g.principal, box: toBase64Url(sealTo(g.agreementKey, seed)) }));
}

async function resendOnWrongGateway<T>(send: () => Promise<T>): Promise<T> {
  for (let round = 1; ; round++) {
    try {
      return await send();
    } catch (err) {
      if (!(err instanceof UnibusError && err.reason === "wrong_gateway" && err.code === ErrorCode.Conflict) || round >= WRONG_GATEWAY_ROUNDS) throw err;
    }
  }
}

function noGateway(): UnibusError {
  return new UnibusError(ErrorCode.Unavailable, "no_gateway", "no replica-gateway answered discovery");
}

/** What {@link initCluster} returns: the recovery secret (show it once, never log it) and the genesis. */
export interface InitClusterResult {
  readonly recoverySecret: string;
  readonly reply: ReplicaInitReply;
  readonly gateways: readonly string[];
}

/**
 * Creates the cluster: a fresh seed, sealed to every discovered gateway
 * replica, whose principals the genesis lists as allowed to hold it.
 */
export async function initCluster(nc: NatsConnection, admin: SigningKey, opts: { clusterName: string; gateways?: readonly GatewayReplica[]; timeoutMs?: number }): Promise<InitClusterResult> {
  const gateways = opts.gateways ?? (await discoverGateways(nc));
  if (gateways.length === 0) throw noGateway();
  const seed = generateClusterSeed();
  const keys = deriveClusterKeys(seed);
  const body = {
    clusterName: opts.clusterName,
    historyKey: toHex(keys.historyKey.publicKey),
    agreementKey: toHex(keys.agreementPublicKey),
    gateways: [...new Set(gateways.map((g) => g.principal))],
    sealed: sealSeed(seed, gateways),
  };
  const reply = await resendOnWrongGateway(() => signedRequest<ReplicaInitReply>(nc, admin, Subjects.replicaGateway.init, body, opts.timeoutMs ?? TIMEOUT_MS));
  const recoverySecret = encodeRecoverySecret(seed);
  seed.fill(0);
  return { recoverySecret, reply, gateways: body.gateways };
}

/**
 * Cold start: hands the seed of `recoverySecret` to the gateway replicas
 * (checksum checked first, so a typo never reaches them). Each replica
 * accepts it only when it derives the genesis history key and the latest
 * pointer verifies under it.
 */
export async function recoverCluster(nc: NatsConnection, admin: SigningKey, recoverySecret: string, opts: { gateways?: readonly GatewayReplica[]; timeoutMs?: number } = {}): Promise<ReplicaRecoverReply> {
  const seed = decodeRecoverySecret(recoverySecret);
  const gateways = opts.gateways ?? (await discoverGateways(nc));
  if (gateways.length === 0) throw noGateway();
  const sealed = sealSeed(seed, gateways);
  seed.fill(0);
  // One replica takes it; the others get it from that peer (they ask while locked).
  return resendOnWrongGateway(() => signedRequest<ReplicaRecoverReply>(nc, admin, Subjects.replicaGateway.recover, { sealed }, opts.timeoutMs ?? TIMEOUT_MS));
}

/** Reads the whole history (paged) and verifies it; `pin` refuses a rollback below a head seen earlier. */
export async function fetchClusterHistory(nc: NatsConnection, admin: SigningKey, opts: { pin?: HistoryPin; historyKey?: string; timeoutMs?: number } = {}): Promise<VerifiedClusterHistory> {
  const entries: ClusterHistoryEntry[] = [];
  let latest: ReplicaHistoryReply["latest"] | undefined;
  for (;;) {
    const page = await signedRequest<ReplicaHistoryReply>(nc, admin, Subjects.replicaGateway.history, { from: entries.length }, opts.timeoutMs ?? TIMEOUT_MS);
    latest ??= page.latest;
    entries.push(...page.entries);
    if (page.entries.length === 0 || entries.length > latest.seq) break;
  }
  return verifyClusterHistory(entries, latest, { ...(opts.pin === undefined ? {} : { pin: opts.pin }), ...(opts.historyKey === undefined ? {} : { historyKey: opts.historyKey }) });
}
