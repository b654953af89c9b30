import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { ServiceName, roomMembershipSubject } from "@unibus/contracts";
import { Access, defineService, endpointTable, membershipCopy, NonceBucket, openBuckets, serviceJetStream, startService } from "@unibus/kit";
import type { KitDeps, RunningService, ServiceDefinition } from "@unibus/kit";
import { pino } from "pino";
import type { Logger } from "pino";
import packageJson from "../package.json" with { type: "json" };
import { roleResolver } from "./access.js";
import { StreamDenialTrail, ensureAuditStream } from "./store/audit.js";
import { adminHandlers } from "./handlers/admin.js";
import { auditHandlers } from "./handlers/audit.js";
import { roomHandlers } from "./handlers/rooms.js";
import { userHandlers } from "./handlers/users.js";
import type { MembershipDeps } from "./deps.js";
import { SystemConnectionKicker } from "./kick.js";
import type { ConnectionKicker, KickOutcome } from "./kick.js";
import { MembershipBucket } from "./store/records.js";
import type { RoomQuotaConfig } from "./quota.js";
import { JetStreamRoomConsumers, deleteLeftoverConsumers } from "./store/room-consumers.js";
import { DirectRoomHistory } from "./store/room-history.js";
import { JetStreamRoomStreams } from "./store/room-streams.js";
import { RoomLogStore, repairFromLogs } from "./store/room-log.js";
import { UsersLogStore, repairUsersFromLog } from "./store/users-log.js";
import { MembershipStore } from "./store/membership-store.js";
import { LeaseBarrier } from "./store/lease-barrier.js";

/**
 * The membership service definition: every endpoint it exposes, in one
 * table. users.* (admin only, but `users.log`), rooms.* (active users;
 * owners/admins manage), admin.bootstrap (the internal bootstrap identity
 * only), audit.denials (admin only). Subjects and schema ids follow from the
 * names (`unibus.v1.membership.<name>`, `membership.<name>.request|reply`).
 */
export function membershipService(deps: MembershipDeps): ServiceDefinition {
  const users = userHandlers(deps);
  const rooms = roomHandlers(deps);
  const admin = adminHandlers(deps);
  const audit = auditHandlers(deps.denials);
  return defineService({
    name: ServiceName.membership,
    version: packageJson.version,
    description: "Users allowlist, rooms and room members",
    endpoints: endpointTable("membership", {
      "users.add": { access: Access.Admin, mutates: true, impl: users.add },
      "users.list": { access: Access.Admin, mutates: false, impl: users.list },
      "users.get": { access: Access.Admin, mutates: false, impl: users.get },
      "users.revoke": { access: Access.Admin, mutates: true, impl: users.revoke },
      "users.log": { access: Access.Signed, mutates: false, impl: users.log },
      "rooms.create": { access: Access.Signed, mutates: true, impl: rooms.create },
      "rooms.get": { access: Access.Signed, mutates: false, impl: rooms.get },
      "rooms.list": { access: Access.Signed, mutates: false, impl: rooms.list },
      "rooms.invite": { access: Access.Signed, mutates: true, impl: rooms.invite },
      "rooms.remove": { access: Access.Signed, mutates: true, impl: rooms.remove },
      "rooms.leave": { access: Access.Signed, mutates: true, impl: rooms.leave },
      "rooms.history": { access: Access.Signed, mutates: false, impl: rooms.history },
      "rooms.log": { access: Access.Signed, mutates: false, impl: rooms.log },
      "admin.bootstrap": { access: Access.Signed, mutates: true, impl: admin.bootstrap },
      "audit.denials": { access: Access.Admin, mutates: false, impl: audit.denials },
    }),
  });
}

/** Options of {@link createMembershipService}: the kit's deps plus the service's own. */
export interface MembershipServiceOptions extends KitDeps {
  /**
   * A system-account connection, used to find and kick connections whose
   * permissions changed. Without it (or `kicker`) every kick is reported failed.
   */
  sys?: NatsConnection;
  /** Overrides the kicker built on `sys`. */
  kicker?: ConnectionKicker;
  /** Principal of the internal bootstrap identity (see `admin.bootstrap`). */
  bootstrapPrincipal?: string;
  /** Delay of a kick that affects the caller itself, after its reply. */
  selfKickDelayMs?: number;
  /** Stream limits of persisted rooms (see `loadRoomQuotaConfig`). */
  quotas?: RoomQuotaConfig;
  /** Rooms one principal may belong to. Default `RoomLimit.perPrincipal` (tests lower it). */
  roomLimit?: number;
}

/** A running membership service. */
export interface RunningMembershipService extends RunningService {
  /** The store it works on (tests read the data model through it). */
  readonly store: MembershipStore;
  /** Its wait for the callouts' leases after each directory write (tests and benches read its counters). */
  readonly leases: LeaseBarrier;
}

/** The kicker used when no system connection is configured: it can only report failure, never pretend. */
class UnconfiguredKicker implements ConnectionKicker {
  constructor(private readonly logger: Logger) {}
  async kick(principal: string): Promise<KickOutcome> {
    this.logger.error({ op: "kick", principal }, "no system connection configured; live connections keep their old permissions");
    return { connections: 0, kicked: 0, failed: 1 };
  }
  kickLater(principal: string): KickOutcome {
    void this.kick(principal);
    return { connections: 0, kicked: 0, failed: 1 };
  }
  close(): void {}
}

/**
 * Opens the membership buckets (users, rooms, members, rooms_by_member,
 * room_log, users_log, and the kit's nonces), then starts the service on `nc`.
 */
export async function createMembershipService(nc: NatsConnection, opts: MembershipServiceOptions = {}): Promise<RunningMembershipService> {
  const logger = opts.logger ?? pino({ level: "info" });
  const replicas = opts.bucketReplicas ?? 1;
  const budgetMs = opts.bucketBudgetMs ?? 30_000;
  // Bounded below the client's timeout: a leaderless bucket gets a coded 503, not silence.
  const js = serviceJetStream(nc);
  const kv = await openBuckets(
    js,
    [
      { name: MembershipBucket.users, replicas },
      { name: MembershipBucket.rooms, replicas },
      { name: MembershipBucket.members, replicas },
      { name: MembershipBucket.roomsByMember, replicas },
      { name: MembershipBucket.roomLog, replicas },
      { name: MembershipBucket.usersLog, replicas },
      { ...NonceBucket, replicas },
    ],
    { budgetMs, logger: logger.child({ svc: ServiceName.membership }) },
  );
  const store = new MembershipStore({ users: kv.users, rooms: kv.rooms, members: kv.members, roomsByMember: kv.rooms_by_member }, nc);
  // Every directory write waits for the callouts holding a login lease to
  // apply it (or for their lease to run out) before anything acknowledges it.
  const leases = new LeaseBarrier(nc, { logger: logger.child({ svc: ServiceName.membership }) });
  store.settle = (write) => leases.settle(write);
  // The access checks' fenced copies replay from now, not from the first
  // request; `rooms_by_member` too, which decides what `rooms.list` shows.
  const copies = [kv.users, kv.members, kv.rooms_by_member].map((b) => membershipCopy(b, logger.child({ svc: ServiceName.membership })));
  const kicker =
    opts.kicker ??
    (opts.sys === undefined ? new UnconfiguredKicker(logger.child({ svc: ServiceName.membership })) : new SystemConnectionKicker(opts.sys, { logger: logger.child({ svc: ServiceName.membership }) }));
  const jsm = await jetstreamManager(nc);
  await ensureAuditStream(jsm, replicas, logger.child({ svc: ServiceName.membership }));
  const roomStreams = new JetStreamRoomStreams(jsm, { replicas });
  const roomLog = new RoomLogStore(kv.room_log, nc);
  const usersLog = new UsersLogStore(kv.users_log);
  const deps: MembershipDeps = {
    store,
    roomLog,
    usersLog,
    kicker,
    streams: roomStreams,
    consumers: new JetStreamRoomConsumers(jsm),
    history: new DirectRoomHistory(nc, roomStreams),
    denials: new StreamDenialTrail(nc),
    ...(opts.bootstrapPrincipal === undefined ? {} : { bootstrapPrincipal: opts.bootstrapPrincipal }),
    ...(opts.selfKickDelayMs === undefined ? {} : { selfKickDelayMs: opts.selfKickDelayMs }),
    ...(opts.quotas === undefined ? {} : { quotas: opts.quotas }),
    ...(opts.roomLimit === undefined ? {} : { roomLimit: opts.roomLimit }),
    // Core NATS publish: a lost event only delays a rekey until the next
    // change or an owner's own check; it never grants anything.
    announce: (event) => nc.publish(roomMembershipSubject(event.roomId), JSON.stringify(event)),
  };
  await upgradeRoomStreams(deps, logger.child({ svc: ServiceName.membership, op: "room-streams" }));
  await repairUsersFromLog(store, usersLog, logger.child({ svc: ServiceName.membership, op: "users-log-repair" }));
  await repairFromLogs(store, roomLog, logger.child({ svc: ServiceName.membership, op: "room-log-repair" }), kicker);
  const running = await startService(nc, membershipService(deps), {
    ...opts,
    logger,
    nonceBucket: kv.nonces,
    resolveRole: roleResolver(store),
  });
  return {
    ...running,
    store,
    leases,
    async stop() {
      await running.stop();
      kicker.close();
      leases.stop();
      for (const c of copies) c.stop();
    },
  };
}

/**
 * Before answering anything: every persisted room's stream gets direct get
 * (history reads need it; older streams were made without it), and every
 * consumer on a room stream is deleted, which also retries a deletion that
 * failed after a removal. A failure is logged per room and does not stop the
 * service (the grants that matter are already gone from the callout).
 */
async function upgradeRoomStreams(deps: MembershipDeps, logger: Logger): Promise<void> {
  const persisted: string[] = [];
  for (const id of await deps.store.listRoomIds()) {
    const room = await deps.store.getRoom(id);
    if (room?.value.policy.persist !== true) continue;
    persisted.push(id);
    await deps.streams.upgrade(id).catch((err: unknown) => logger.error({ room: id, err: err instanceof Error ? err.message : String(err) }, "room stream not upgraded to direct get"));
  }
  await deleteLeftoverConsumers(deps.consumers, persisted, logger);
}
