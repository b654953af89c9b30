import { ErrorCode, UnibusError } from "@unibus/contracts";
import type { MembershipRoomsCreateReply, MembershipRoomsCreateRequest } from "@unibus/contracts";

/** The limits of one persisted room's stream. */
export type RoomQuota = NonNullable<MembershipRoomsCreateReply["quota"]>;
/** An owner's requested override; omitted fields take the defaults. */
export type RoomQuotaRequest = NonNullable<MembershipRoomsCreateRequest["quota"]>;

/** The quota fields, in the order they are checked and reported. */
const QUOTA_FIELDS = ["maxBytes", "maxMsgs", "maxMsgSize", "maxAgeSeconds"] as const satisfies readonly (keyof RoomQuota)[];

/** Stable reasons of quota errors. */
export const QuotaReason = {
  /** An owner asked for more than the operator allows. */
  aboveCeiling: "quota_above_ceiling",
  /** A quota on a room without a stream would be silently meaningless. */
  needsPersist: "quota_needs_persist",
} as const;

/** Defaults every persisted room gets, and the ceilings an owner's override may not exceed. */
export interface RoomQuotaConfig {
  defaults: RoomQuota;
  ceilings: RoomQuota;
}

const MiB = 1024 * 1024;
const DAY = 24 * 60 * 60;

/**
 * Built-in defaults and ceilings. A room's `maxBytes` is reserved against the
 * account's JetStream `max_file` at stream creation, so the default is kept
 * small enough that the default account limit holds hundreds of rooms;
 * `maxMsgSize` equals NATS's default max_payload, the largest frame a
 * connection can send anyway.
 */
export const DefaultRoomQuotaConfig: RoomQuotaConfig = {
  defaults: { maxBytes: 64 * MiB, maxMsgs: 1_000_000, maxMsgSize: MiB, maxAgeSeconds: 365 * DAY },
  ceilings: { maxBytes: 1024 * MiB, maxMsgs: 10_000_000, maxMsgSize: MiB, maxAgeSeconds: 10 * 365 * DAY },
};

/** Environment variables of the quota config, per field. */
export const RoomQuotaEnv = {
  maxBytes: { default: "UNIBUS_ROOM_MAX_BYTES", ceiling: "UNIBUS_ROOM_CEILING_MAX_BYTES" },
  maxMsgs: { default: "UNIBUS_ROOM_MAX_MSGS", ceiling: "UNIBUS_ROOM_CEILING_MAX_MSGS" },
  maxMsgSize: { default: "UNIBUS_ROOM_MAX_MSG_SIZE", ceiling: "UNIBUS_ROOM_CEILING_MAX_MSG_SIZE" },
  maxAgeSeconds: { default: "UNIBUS_ROOM_MAX_AGE_SECONDS", ceiling: "UNIBUS_ROOM_CEILING_MAX_AGE_SECONDS" },
} as const satisfies Record<keyof RoomQuota, { default: string; ceiling: string }>;

/**
 * Reads the quota config from `env`, starting from {@link DefaultRoomQuotaConfig}.
 * A value that is not a positive integer, or a default above its ceiling,
 * stops the service: an operator typo must not start rooms without limits.
 */
export function loadRoomQuotaConfig(env: Readonly<Record<string, string | undefined>>): RoomQuotaConfig {
  const read = (name: string, fallback: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === "") return fallback;
    if (!/^[1-9][0-9]{0,15}$/.test(raw) || !Number.isSafeInteger(Number(raw))) throw new RangeError(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
    return Number(raw);
  };
  const defaults = { ...DefaultRoomQuotaConfig.defaults };
  const ceilings = { ...DefaultRoomQuotaConfig.ceilings };
  for (const field of QUOTA_FIELDS) {
    ceilings[field] = read(RoomQuotaEnv[field].ceiling, ceilings[field]);
    defaults[field] = read(RoomQuotaEnv[field].default, Math.min(defaults[field], ceilings[field]));
    if (defaults[field] > ceilings[field]) throw new RangeError(`${RoomQuotaEnv[field].default} (${defaults[field]}) is above ${RoomQuotaEnv[field].ceiling} (${ceilings[field]})`);
  }
  return { defaults, ceilings };
}

/**
 * The quota a new room gets: the defaults overridden by `requested`, each
 * field checked against its ceiling. Checked before anything is written, so a
 * refusal leaves no stream and no room record.
 *
 * @throws UnibusError 403 `quota_above_ceiling` (details: path, limit) for a field above its ceiling;
 *   400 `quota_needs_persist` for a quota on a room that has no stream.
 */
export function resolveRoomQuota(config: RoomQuotaConfig, requested: RoomQuotaRequest | undefined, persist: boolean): RoomQuota | undefined {
  if (!persist) {
    if (requested !== undefined) throw new UnibusError(ErrorCode.BadRequest, QuotaReason.needsPersist, "a quota applies only to a persisted room", { details: { path: "/quota" } });
    return undefined;
  }
  const quota = { ...config.defaults };
  for (const field of QUOTA_FIELDS) {
    const want = requested?.[field];
    if (want === undefined) continue;
    if (want > config.ceilings[field]) {
      throw new UnibusError(ErrorCode.Forbidden, QuotaReason.aboveCeiling, `quota ${field} is above the ceiling of ${config.ceilings[field]}`, {
        details: { path: `/quota/${field}`, limit: config.ceilings[field] },
      });
    }
    quota[field] = want;
  }
  return quota;
}
