import { Kvm } from "@nats-io/kv";
import type { NatsConnection, NodeConnectionOptions } from "@nats-io/transport-node";
import { pino } from "pino";
import type { Logger } from "pino";
import { CalloutLeaseRunner, CalloutXkey, DenialCache, KvPrincipalDirectory, WatchedDirectory, createAuthCalloutService, invalidateOnUserChanges } from "@unibus/auth-callout";
import { calloutAuthorization } from "@unibus/cli";
import { CalloutLease, ServiceName, StoredBucket } from "@unibus/contracts";
import { NkeyPrefix, SigningKey, createIdentity, encodeNkeySeed, nkeyAuthenticator, randomBytes } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { MembershipBucket, createMembershipService } from "@unibus/membership";
import type { RunningMembershipService } from "@unibus/membership";
import { connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { startTestCluster, startTestServer } from "@unibus/testing";
import type { TestCluster, TestClusterOptions, TestServer } from "@unibus/testing";

/** Options of {@link startTestBus}. */
export interface TestBusOptions {
  /** Encrypt callout traffic with an xkey, as `unibus up` does. Default true. */
  readonly xkey?: boolean;
  /** Logger for the in-process services. Default: silent. */
  readonly logger?: Logger;
  /** Let unknown identities (nodes) through the callout with the replica-handshake-only grant. Default false. */
  readonly bootstrapAccess?: boolean;
  /**
   * Adds an unrestricted config user to the app account, for tests that must
   * build state no client or service may (a consumer left from before
   * members lost the consumer grant). Default false: production users only.
   */
  readonly operator?: boolean;
  /**
   * Nodes: 1 (default) is one server; 3 is a real cluster as in production:
   * R3 buckets, services with every node as a seed, and one callout per node
   * connected to that node only (each server's auth requests reach its local
   * callout first, so every node's view of the directory is exercised).
   */
  readonly nodes?: 1 | 3;
  /** With `nodes: 3`: mutual-TLS routes and cuttable route links, for chaos tests (see `startTestCluster`). */
  readonly cluster?: Pick<TestClusterOptions, "routeTls" | "routeProxies">;
  /**
   * The callout's directory. "watched" (default) is production's: the
   * fenced in-memory copy, with a denial cache cleared by a users watch.
   * "leader-reads" reads both records from the stream leaders per login
   * (the watched directory's own fallback), for a test of that path alone.
   */
  readonly directory?: "watched" | "leader-reads";
}

/** A user added by {@link TestBus.addMember}, connected through the callout. */
export interface TestBusMember {
  readonly identity: Identity;
  readonly principal: string;
  readonly client: UnibusClient;
}

/** A running bus: nats-server with auth callout, the callout and membership services, admin #0. */
export interface TestBus {
  /** The only server, or the first node of {@link TestBus.cluster}. */
  readonly server: TestServer;
  /** The cluster when started with `nodes: 3`. */
  readonly cluster?: TestCluster;
  /** The accounts and authorization every node runs with (public keys only), for a node that joins later. */
  readonly authorization: ReturnType<typeof calloutAuthorization>;
  readonly url: string;
  /** Admin #0, seeded through the bootstrap identity like `unibus up` does. */
  readonly admin: UnibusClient;
  readonly adminIdentity: Identity;
  readonly membership: RunningMembershipService;
  /** The privileged bootstrap identity's client (config user: `admin.bootstrap` and its inbox only). */
  readonly bootstrap: UnibusClient;
  /** The system-account connection membership kicks with (for tests and benches that kick directly). */
  readonly system: NatsConnection;
  /** Each node's callout directory, in node order (their stats show which path decided). */
  readonly directories: readonly (WatchedDirectory | KvPrincipalDirectory)[];
  /** Each watched callout's login lease, in node order (none with `directory: "leader-reads"`). */
  readonly leases: readonly CalloutLeaseRunner[];
  /** Adds an active user through the admin API and connects it (through the callout). */
  addMember(handle: string, role?: "admin" | "member"): Promise<TestBusMember>;
  /** Connects an identity through the callout (it must be on the allowlist to succeed); `url` picks a node. */
  connectAs(identity: Identity | SigningKey, url?: string): Promise<UnibusClient>;
  /** A connection as the unrestricted test user; throws unless started with `operator: true`. */
  operatorConnection(): Promise<NatsConnection>;
  /** A connection as the service user of `service`, with its production permissions; `node` pins it to one node of a cluster. */
  serviceConnection(service: Exclude<ServiceName, "auth-callout">, node?: TestServer): Promise<NatsConnection>;
  stop(): Promise<void>;
}

/**
 * Starts a test nats-server with the production callout configuration and
 * runs the auth-callout and membership services in-process. Other services a
 * test needs connect with {@link TestBus.serviceConnection}.
 */
export async function startTestBus(opts: TestBusOptions = {}): Promise<TestBus> {
  const logger = opts.logger ?? pino({ level: "silent" });
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const xkey = opts.xkey === false ? undefined : CalloutXkey.generate();
  const serviceKeys = new Map<ServiceName, SigningKey>(Object.values(ServiceName).map((name) => [name, SigningKey.generate()]));
  const systemKey = SigningKey.generate();
  const bootstrapKey = SigningKey.generate();
  const key = (name: ServiceName): SigningKey => {
    const k = serviceKeys.get(name);
    if (k === undefined) throw new Error(`no key for ${name}`);
    return k;
  };

  const authorization = calloutAuthorization({
    calloutIssuerPublic: issuer.principal,
    ...(xkey !== undefined ? { calloutXkeyPublic: xkey.publicKey } : {}),
    services: new Map([...serviceKeys].map(([name, k]) => [name, k.principal])),
    systemPublic: systemKey.principal,
    bootstrapPublic: bootstrapKey.principal,
  });
  const operatorKey = opts.operator === true ? SigningKey.generate() : undefined;
  if (operatorKey !== undefined) addOperatorUser(authorization, operatorKey.principal);
  // A cluster's readiness probe places a stream in the app account, past the
  // callout (which is not running yet): a key of its own, used for nothing else.
  const probeKey = opts.nodes === 3 ? SigningKey.generate() : undefined;
  if (probeKey !== undefined) addOperatorUser(authorization, probeKey.principal);
  // `no_advertise` as in production: a client tries only the node it was
  // given, so a refused login fails instead of wandering to other nodes.
  const cluster =
    probeKey !== undefined
      ? await startTestCluster(3, { ...opts.cluster, config: { ...authorization, cluster: { no_advertise: true } }, probeConnect: { authenticator: nkeyAuthenticator(probeKey) } })
      : undefined;
  const server = cluster?.servers[0] ?? (await startTestServer({ config: authorization }));
  const stopServers = (): Promise<void> => cluster?.stop() ?? server.stop();
  const clients: UnibusClient[] = [];
  const connections: NatsConnection[] = [];
  /** The callouts' directory watches, stopped before their connections close. */
  const stoppers: (() => void)[] = [];
  const directories: (WatchedDirectory | KvPrincipalDirectory)[] = [];
  /** The watched callouts' login leases, stopped (records deleted) before membership. */
  const leases: CalloutLeaseRunner[] = [];
  let membership: RunningMembershipService | undefined;
  try {
    // In a cluster every service gets all nodes as seeds, as in production,
    // tried in order: services sit on node 0, so a test knows which other
    // node it may pause without stalling them.
    // Services reconnect forever, as production services do (kit's
    // service-main): nats.js gives up after 10 tries 2 s apart, so an outage
    // longer than ~20 s would leave a service disconnected for good.
    const connectNode = (o: NodeConnectionOptions, node?: TestServer): Promise<NatsConnection> =>
      node === undefined && cluster !== undefined ? cluster.connect({ noRandomize: true, maxReconnectAttempts: -1, ...o }) : (node ?? server).connect({ maxReconnectAttempts: -1, ...o });
    const asService = async (name: ServiceName, node?: TestServer): Promise<NatsConnection> => {
      const k = key(name);
      const nc = await connectNode({ authenticator: nkeyAuthenticator(k), inboxPrefix: `_INBOX.${k.principal}`, name }, node);
      connections.push(nc);
      return nc;
    };
    const sys = await connectNode({ authenticator: nkeyAuthenticator(systemKey), name: "system" });
    connections.push(sys);
    membership = await createMembershipService(await asService(ServiceName.membership), {
      logger,
      sys,
      bootstrapPrincipal: bootstrapKey.principal,
      bucketReplicas: cluster === undefined ? 1 : 3,
    });

    for (const node of cluster?.servers ?? [server]) {
      const calloutNc = await asService(ServiceName.authCallout, node);
      const kvm = new Kvm(calloutNc);
      const users = await kvm.open(MembershipBucket.users, { allow_direct: false });
      const rooms = await kvm.open(MembershipBucket.roomsByMember, { allow_direct: false });
      // As the callout's entry builds it, so every cross-service test logs in
      // through the directory production decides with.
      let directory: KvPrincipalDirectory | WatchedDirectory;
      let denialCache: DenialCache | undefined;
      if (opts.directory === "leader-reads") {
        directory = new KvPrincipalDirectory(users, rooms);
        directories.push(directory);
      } else {
        const cache = new DenialCache();
        denialCache = cache;
        const watched = await WatchedDirectory.start(users, rooms, { logger, onUserApplied: (principal) => cache.invalidate(principal) });
        stoppers.push(() => watched.stop());
        directory = watched;
        directories.push(watched);
        const watch = invalidateOnUserChanges(users, denialCache);
        stoppers.push(() => watch.stop());
        // The login lease, as the entry runs it: logins from memory while
        // held, and membership's writes wait for this replica's barrier.
        const leaseKv = await kvm.create(StoredBucket.authCallout.leases, { ttl: CalloutLease.recordTtlMs, replicas: cluster === undefined ? 1 : 3, allow_direct: false });
        const lease = await CalloutLeaseRunner.start(calloutNc, leaseKv, watched, { logger });
        leases.push(lease);
      }
      await createAuthCalloutService(calloutNc, {
        issuer,
        directory,
        logger,
        ...(denialCache !== undefined ? { denialCache } : {}),
        ...(xkey !== undefined ? { xkey } : {}),
        ...(opts.bootstrapAccess === true ? { bootstrapAccess: true } : {}),
      });
    }

    const connectAs = async (identity: Identity | SigningKey, url = server.url): Promise<UnibusClient> => {
      // Generous: a busy 2-core CI machine runs the callout and services in
      // this same process; a lost reply still fails, only later.
      const c = await connect({ url, identity, requestTimeoutMs: 15_000 });
      clients.push(c);
      return c;
    };
    const boot = await connectAs(bootstrapKey);
    const adminIdentity = createIdentity({ label: "admin" });
    await boot.admin.bootstrap(adminIdentity.principal, "admin");
    const admin = await connectAs(adminIdentity);
    const running = membership;

    return {
      server,
      ...(cluster !== undefined ? { cluster } : {}),
      authorization,
      url: server.url,
      admin,
      adminIdentity,
      membership: running,
      bootstrap: boot,
      system: sys,
      directories,
      leases,
      async addMember(handle, role = "member") {
        const identity = createIdentity({ label: handle });
        await admin.users.add(identity.principal, handle, role);
        return { identity, principal: identity.principal, client: await connectAs(identity) };
      },
      connectAs,
      serviceConnection: asService,
      async operatorConnection() {
        if (operatorKey === undefined) throw new Error("test bus started without operator: true");
        const nc = await server.connect({ authenticator: nkeyAuthenticator(operatorKey), name: "test-operator" });
        connections.push(nc);
        return nc;
      },
      async stop() {
        await Promise.allSettled(clients.map((c) => c.close()));
        await Promise.allSettled(leases.map((l) => l.stop()));
        await running.stop().catch(() => undefined);
        for (const stop of stoppers) stop();
        await Promise.allSettled(connections.map((nc) => nc.close()));
        await stopServers();
      },
    };
  } catch (err) {
    await Promise.allSettled(clients.map((c) => c.close()));
    await Promise.allSettled(leases.map((l) => l.stop()));
    await membership?.stop().catch(() => undefined);
    for (const stop of stoppers) stop();
    await Promise.allSettled(connections.map((nc) => nc.close()));
    await stopServers();
    throw err;
  }
}

/** Adds `nkey` to the app account with no permission limits, and past the callout. */
function addOperatorUser(config: ReturnType<typeof calloutAuthorization>, nkey: string): void {
  // `UNIBUS` is the app account `calloutAuthorization` lays out.
  const app = (config.accounts as Record<string, { users?: { nkey: string }[] } | undefined>).UNIBUS;
  const callout = (config.authorization as { auth_callout?: { auth_users?: string[] } }).auth_callout;
  if (app?.users === undefined || callout?.auth_users === undefined) throw new Error("unexpected callout config shape");
  app.users.push({ nkey });
  callout.auth_users.push(nkey);
}
