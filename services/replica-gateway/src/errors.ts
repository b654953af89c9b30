import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";

/** A create or compare-and-set lost to another writer. */
export function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamWrongLastSequence;
}

/** A store failure the caller may retry; never a sign that the request was wrong. */
export function unavailable(err: unknown): UnibusError {
  return new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
}

/** Reasons of the lifecycle's own errors (the history's are in the SDK). */
export const LifecycleReason = {
  /** No replica holds the cluster seed yet: every lifecycle step fails closed. */
  clusterLocked: "cluster_locked",
  clusterExists: "cluster_exists",
  noCluster: "no_cluster",
  /** The request's sealed seed is not for this replica (the CLI resends). */
  wrongGateway: "wrong_gateway",
  seedMismatch: "seed_mismatch",
  clusterMismatch: "cluster_mismatch",
  ticketInvalid: "ticket_invalid",
  sessionInvalid: "session_invalid",
  badSealed: "bad_sealed",
} as const;

/** A coded lifecycle error. */
export function lifecycleError(code: ErrorCode, reason: (typeof LifecycleReason)[keyof typeof LifecycleReason], message: string, details?: Record<string, unknown>): UnibusError {
  return new UnibusError(code, reason, message, details === undefined ? {} : { details });
}
