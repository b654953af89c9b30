/**
 * The login-denial audit trail: the auth callout appends one record per
 * refused login to the AUDIT_DENIALS stream; this service creates the stream
 * and serves `audit.denials` to admins. Admins hold no JetStream grant (a
 * JetStream API request answers on any subject the requester names, with the
 * server's rights), so the service reads the stream on its own inbox.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import { DiscardPolicy, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { AuditDenialRecord, MembershipAuditDenialsReply } from "@unibus/contracts";
import { AuditDenialStream, ErrorCode, ErrorReason, SchemaRegistry, UnibusError, auditDenialSubject } from "@unibus/contracts";
import type { Logger } from "pino";
import { directGetBatch } from "./room-history.js";

/** Records per reply when the request names no limit. */
export const AUDIT_DEFAULT_LIMIT = 200;

/** Reads refusal records from the audit stream. */
export interface DenialTrail {
  /** Records at or after `since`, oldest first, of `principal` if given; at most `limit` + whether more matched. */
  read(since: Date, principal: string | undefined, limit: number): Promise<MembershipAuditDenialsReply>;
}

/**
 * Creates the capped audit stream if it is missing (R3 in a cluster, oldest
 * records discarded first, direct get on so the service reads it without a
 * consumer). A failure is logged and leaves `audit.denials` answering 503:
 * logins never depend on the trail.
 */
export async function ensureAuditStream(jsm: JetStreamManager, replicas: number, logger: Logger): Promise<void> {
  try {
    await jsm.streams.add({
      name: AuditDenialStream.name,
      subjects: [`${AuditDenialStream.subjectPrefix}.>`],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_msgs: AuditDenialStream.maxMsgs,
      max_bytes: AuditDenialStream.maxBytes,
      max_age: AuditDenialStream.maxAgeMs * 1_000_000,
      num_replicas: replicas,
      allow_direct: true,
    });
  } catch (err) {
    logger.error({ op: "audit-stream", err: err instanceof Error ? err.message : String(err) }, "audit stream not created; audit.denials will answer 503");
  }
}

/** {@link DenialTrail} over batch direct gets on the service's own connection. */
export class StreamDenialTrail implements DenialTrail {
  readonly #validate = new SchemaRegistry().validator("audit.denial.record");

  constructor(private readonly nc: NatsConnection) {}

  async read(since: Date, principal: string | undefined, limit: number): Promise<MembershipAuditDenialsReply> {
    const subject = principal === undefined ? `${AuditDenialStream.subjectPrefix}.>` : auditDenialSubject(principal);
    // One more than asked, to tell whether the reply is truncated.
    const raw = await directGetBatch(this.nc, AuditDenialStream.name, subject, { start_time: since.toISOString() }, limit + 1);
    if (raw === null) throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "the audit stream does not exist yet");
    const denials: AuditDenialRecord[] = [];
    for (const m of raw) {
      let value: unknown;
      try {
        value = JSON.parse(Buffer.from(m.data).toString("utf8"));
      } catch {
        continue;
      }
      // Only the callout may publish there; anything else is skipped, never passed on.
      if (this.#validate(value).ok) denials.push(value as AuditDenialRecord);
    }
    return { denials: denials.slice(0, limit), truncated: raw.length > limit };
  }
}
