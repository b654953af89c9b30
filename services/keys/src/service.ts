import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { ServiceName } from "@unibus/contracts";
import { BucketSetupError, NonceBucket, defineService, openBuckets, startService } from "@unibus/kit";
import type { KitDeps, RunningService, ServiceDefinition } from "@unibus/kit";
import { pino } from "pino";
import packageJson from "../package.json" with { type: "json" };
import { roleResolver } from "./access.js";
import type { MembershipView } from "./access.js";
import { AgreementKeyDirectory } from "./agreement-directory.js";
import { MemberDirectory } from "./member-directory.js";
import { agreementKeyEndpoints } from "./agreement-keys.js";
import { epochEndpoints } from "./epochs.js";
import { KeysBucket, MembershipReadBucket } from "./records.js";
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
 * and room-key epochs stored only as signed sets of sealed shares.
 */
export function keysService(deps: KeysDeps): ServiceDefinition {
  return defineService({
    name: ServiceName.keys,
    version: packageJson.version,
    description: "Sealed room-key shares and key epochs",
    endpoints: { ...agreementKeyEndpoints(deps), ...epochEndpoints(deps) },
  });
}

/**
 * Opens a bucket another service creates, waiting for it within `budgetMs`
 * (the membership service may start after this one).
 */
async function openExisting(kvm: Kvm, name: string, budgetMs: number): Promise<KV> {
  const deadline = Date.now() + budgetMs;
  for (let delay = 100; ; delay = Math.min(delay * 2, 2_000)) {
    try {
      return await kvm.open(name);
    } catch (err) {
      if (Date.now() + delay > deadline) throw new BucketSetupError(name, `bucket ${name} (owned by membership) not found within ${budgetMs} ms`, { cause: err });
      await new Promise((r) => setTimeout(r, delay));
    }
  }
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
  const js = jetstream(nc);
  const kv = await openBuckets(
    js,
    [
      { name: KeysBucket.roomKeys, replicas },
      { name: KeysBucket.agreementKeys, replicas },
      { ...NonceBucket, replicas },
    ],
    { budgetMs: opts.bucketBudgetMs ?? 30_000, logger: logger.child({ svc: ServiceName.keys }) },
  );
  const kvm = new Kvm(js);
  const budgetMs = opts.bucketBudgetMs ?? 30_000;
  const users = await openExisting(kvm, MembershipReadBucket.users, budgetMs);
  const members = await openExisting(kvm, MembershipReadBucket.members, budgetMs);
  const memberDirectory = await MemberDirectory.watch(members, logger.child({ svc: ServiceName.keys }));
  const membership: MembershipView = { users, members, memberDirectory };
  const agreementDirectory = await AgreementKeyDirectory.watch(kv.agreement_keys, logger.child({ svc: ServiceName.keys }));
  const deps: KeysDeps = { roomKeys: kv.room_keys, agreementKeys: kv.agreement_keys, agreementDirectory, membership };
  const running = await startService(nc, keysService(deps), { ...opts, logger, nonceBucket: kv.nonces, resolveRole: roleResolver(membership.users) });
  return {
    ...running,
    buckets: deps,
    async stop() {
      await running.stop();
      agreementDirectory.stop();
      memberDirectory.stop();
    },
  };
}
