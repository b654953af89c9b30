import type { NatsConnection } from "@nats-io/transport-node";
import { ServiceName } from "@unibus/contracts";
import { Access, NonceBucket, defineService, endpointTable, membershipCopy, openBuckets, openExistingBuckets, serviceJetStream, startService } from "@unibus/kit";
import type { KitDeps, RunningService, ServiceDefinition } from "@unibus/kit";
import { pino } from "pino";
import packageJson from "../package.json" with { type: "json" };
import { roleResolver } from "./access.js";
import type { MembershipView } from "./access.js";
import { AgreementKeyDirectory } from "./store/agreement-directory.js";
import { consumeMemberRemovals } from "./store/share-redaction.js";
import { agreementKeyHandlers } from "./handlers/agreement-keys.js";
import { epochHandlers } from "./handlers/epochs.js";
import { shareHandlers } from "./handlers/shares.js";
import { KeysBucket, MembershipReadBucket } from "./store/records.js";
import type { KV } from "@nats-io/kv";

/** What the keys handlers work on. */
export interface KeysDeps {
  roomKeys: KV;
  agreementKeys: KV;
  agreementDirectory?: AgreementKeyDirectory;
  membership: MembershipView;
}

/**
 * The keys service definition (contracts/specs/room-keys.md): agreement keys,
 * and room-key epochs stored only as signed sets of sealed shares. The table
 * is every endpoint the service exposes; subjects and schema ids follow from
 * the names (`unibus.v1.keys.<name>`, `keys.<name>.request|reply`).
 */
export function keysService(deps: KeysDeps): ServiceDefinition {
  const agreementKeys = agreementKeyHandlers(deps);
  const epochs = epochHandlers(deps);
  const shares = shareHandlers(deps);
  return defineService({
    name: ServiceName.keys,
    version: packageJson.version,
    description: "Sealed room-key shares and key epochs",
    endpoints: endpointTable("keys", {
      "agreement_keys.register": { access: Access.Signed, mutates: true, impl: agreementKeys.register },
      "agreement_keys.list": { access: Access.Signed, mutates: false, impl: agreementKeys.list },
      "epochs.publish": { access: Access.Signed, mutates: true, impl: epochs.publish },
      "epochs.list": { access: Access.Signed, mutates: false, impl: epochs.list },
      "shares.get": { access: Access.Signed, mutates: false, impl: shares.get },
    }),
  });
}

/** A running keys service. */
export interface RunningKeysService extends RunningService {
  /** Its buckets (tests inspect what is stored). */
  readonly buckets: KeysDeps;
}

/**
 * Opens `room_keys`, `agreement_keys` and `nonces`, and the membership
 * service's `users` and `members` read-only (opened, never created: a keys
 * service that created an empty `members` bucket would deny everyone, but a
 * typo'd bucket name must fail loudly, not silently), then starts the service.
 */
export async function createKeysService(nc: NatsConnection, opts: KitDeps = {}): Promise<RunningKeysService> {
  const logger = opts.logger ?? pino({ level: "info" });
  const replicas = opts.bucketReplicas ?? 1;
  // Bounded below the client's timeout: a leaderless bucket gets a coded 503, not silence.
  const js = serviceJetStream(nc);
  const kv = await openBuckets(
    js,
    [
      { name: KeysBucket.roomKeys, replicas },
      { name: KeysBucket.agreementKeys, replicas },
      { ...NonceBucket, replicas },
    ],
    { budgetMs: opts.bucketBudgetMs ?? 30_000, logger: logger.child({ svc: ServiceName.keys }) },
  );
  // Membership creates these; on a first start it may not have yet, so wait
  // for them within the same budget instead of crash-looping on "stream not found".
  const { users, members } = await openExistingBuckets(js, [MembershipReadBucket.users, MembershipReadBucket.members], {
    budgetMs: opts.bucketBudgetMs ?? 30_000,
    logger: logger.child({ svc: ServiceName.keys }),
  });
  // The access checks' fenced copies replay from now, not from the first
  // request; the one of `members` also lists each room's members.
  const copies = [users, members].map((b) => membershipCopy(b, logger.child({ svc: ServiceName.keys })));
  const membership: MembershipView = { users, members };
  const agreementDirectory = await AgreementKeyDirectory.watch(kv.agreement_keys, logger.child({ svc: ServiceName.keys }));
  const deps: KeysDeps = { roomKeys: kv.room_keys, agreementKeys: kv.agreement_keys, agreementDirectory, membership };
  const removals = await consumeMemberRemovals({ js, roomKeys: kv.room_keys, membership, logger: logger.child({ svc: ServiceName.keys }), budgetMs: opts.bucketBudgetMs ?? 30_000 });
  const running = await startService(nc, keysService(deps), { ...opts, logger, nonceBucket: kv.nonces, resolveRole: roleResolver(membership.users) });
  return {
    ...running,
    buckets: deps,
    async stop() {
      await removals.stop();
      await running.stop();
      agreementDirectory.stop();
      for (const c of copies) c.stop();
    },
  };
}
