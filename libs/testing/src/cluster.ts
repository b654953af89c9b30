import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mergeNatsConfig } from "@unibus/natsd";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection, NodeConnectionOptions } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import type { KV, KvOptions } from "@nats-io/kv";
import { trackLeftover } from "./cleanup.js";
import { eventually, retryUntil } from "./eventually.js";
import { startLinkProxy } from "./link-proxy.js";
import type { LinkProxy } from "./link-proxy.js";
import { freeLoopbackPort } from "./ports.js";
import { makeRouteTls } from "./route-tls.js";
import { launchTestServer, testServerDefaults } from "./server.js";
import type { TestServer, TestServerOptions } from "./server.js";

/** Options of {@link startTestCluster}. */
export interface TestClusterOptions extends TestServerOptions {
  /** Cluster name. Default `unibus-test`. */
  name?: string;
  /** How long to wait for a JetStream meta leader. Default 45 s (a cold cluster needs ~10 s). */
  readyTimeoutMs?: number;
  /** Connection options of the readiness probe (credentials when `config` requires auth). */
  probeConnect?: NodeConnectionOptions;
  /**
   * Mutual-TLS routes as in production: a throwaway route CA and node certs
   * made with the `openssl` CLI in the cluster's temp dir (keys 0600). Default false.
   */
  routeTls?: boolean;
  /**
   * Every route link (node i dialing node j) through its own {@link LinkProxy},
   * so a test can partition a node ({@link TestCluster.partition}). Default false.
   */
  routeProxies?: boolean;
}

/** One directed route link: node `from` dials node `to` through `proxy`. */
export interface RouteLink {
  readonly from: number;
  readonly to: number;
  readonly proxy: LinkProxy;
}

/** A real nats-server cluster on loopback, one JetStream peer per node. */
export interface TestCluster {
  /** Cluster name. */
  readonly name: string;
  /** Node handles; index i stays valid across `stopNode(i)`/`startNode(i)`. */
  readonly servers: TestServer[];
  /** Client URLs of all nodes. */
  readonly urls: string[];
  /** Each node's `server_name` (`<name>-n1`, …), in node order: how JetStream names a leader or peer. */
  readonly nodeNames: readonly string[];
  /** The index of the node a JetStream leader or peer name denotes; -1 for none (no leader, or another cluster's). */
  nodeIndex(serverName: string | undefined): number;
  /** Route URLs of all nodes' own route ports (`nats-route://127.0.0.1:port`), for a node that joins later. */
  readonly routeUrls: readonly string[];
  /** Connects with every node as a seed (tracked, closed by `stop()`). */
  connect(opts?: NodeConnectionOptions): Promise<NatsConnection>;
  /** Stops node i's process, keeping its data dir and ports (for chaos tests). */
  stopNode(i: number): Promise<void>;
  /** Starts a stopped node i again with its data on the same ports. */
  startNode(i: number): Promise<void>;
  /** kill -9 of node i (no shutdown at all), keeping its data dir and ports; `startNode(i)` brings it back. */
  crashNode(i: number): Promise<void>;
  /** Route links through proxies (empty unless started with `routeProxies`). */
  readonly links: readonly RouteLink[];
  /** Cuts every route link to and from node i: it is alone, the others keep each other. Needs `routeProxies`. */
  partition(i: number): void;
  /** Heals every cut route link. */
  heal(): void;
  /** Waits until the running nodes agree on a JetStream meta leader and the JS API answers; returns the leader's server name. */
  waitForMetaLeader(timeoutMs?: number): Promise<string>;
  /** Closes connections, stops every node, removes all data. Idempotent. */
  stop(): Promise<void>;
}

/** Node i's `server_name` in cluster `name`. */
function nodeName(name: string, i: number): string {
  return `${name}-n${i + 1}`;
}

interface Jsz {
  meta_cluster?: { leader?: string; cluster_size?: number; replicas?: { name?: string; current?: boolean; offline?: boolean }[] };
}

function node(servers: TestServer[], i: number): TestServer {
  const s = servers[i];
  if (!s) throw new RangeError(`no node ${i} in a cluster of ${servers.length}`);
  return s;
}

async function metaClusterOf(server: TestServer): Promise<Jsz["meta_cluster"]> {
  try {
    const res = await fetch(`http://127.0.0.1:${server.monitorPort}/jsz`, { signal: AbortSignal.timeout(1000) });
    return ((await res.json()) as Jsz).meta_cluster;
  } catch {
    return undefined;
  }
}

/**
 * A leader alone is not enough: until every running peer is current in the
 * meta group, an R3 create fails with "no suitable peers for placement"
 * (seen in CI). Only the leader reports the peers.
 */
function peersCurrent(metas: Jsz["meta_cluster"][], running: number): boolean {
  return metas.some((m) => {
    const peers = m?.replicas;
    return peers !== undefined && peers.filter((p) => p.current === true && p.offline !== true).length >= running - 1;
  });
}

/**
 * The real readiness test: placing a stream on every running node. Peers can
 * look current in /jsz before placement sees them (their stats arrive on
 * their own schedule), and an R3 create then fails with "no suitable peers
 * for placement" (seen in CI).
 */
async function placementWorks(nc: NatsConnection, replicas: number): Promise<boolean> {
  const name = `READY_PROBE_${Date.now()}_${Math.floor(Math.random() * 1e6)}`;
  const config = { name, subjects: [`_ready_probe.${name}`], num_replicas: replicas, storage: "memory" };
  try {
    const created = await nc.request(`$JS.API.STREAM.CREATE.${name}`, JSON.stringify(config), { timeout: 2000 });
    if (created.json<{ error?: unknown }>().error) return false;
    await nc.request(`$JS.API.STREAM.DELETE.${name}`, undefined, { timeout: 2000 }).catch(() => undefined);
    return true;
  } catch {
    return false;
  }
}

/** `$JS.API.INFO` answers without an error only once the meta group has quorum. */
async function jsApiAnswers(nc: NatsConnection): Promise<boolean> {
  try {
    const msg = await nc.request("$JS.API.INFO", undefined, { timeout: 1000 });
    return !(msg.json<{ error?: unknown }>().error);
  } catch {
    return false;
  }
}

/**
 * Starts a real `size`-node cluster on loopback: routes on fixed free ports,
 * JetStream on every node (own `server_name` and store dir), and resolves
 * only once a JetStream meta leader exists. `config` is merged over each
 * node's defaults. Everything is killed and removed on `stop()` or, failing
 * that, when the test process exits.
 */
export async function startTestCluster(size = 3, opts: TestClusterOptions = {}): Promise<TestCluster> {
  const name = opts.name ?? "unibus-test";
  const jetstream = opts.jetstream ?? true;
  const root = await mkdtemp(join(tmpdir(), "unibus-cluster-"));
  const untrackRoot = trackLeftover({ kill: () => undefined, dir: root });
  const servers: TestServer[] = [];
  const connections = new Set<NatsConnection>();
  const links: RouteLink[] = [];
  const routeUrls: string[] = [];
  // Where each node says it can be reached for routes: a port that refuses
  // every connection. Peers then reach each other only through the
  // configured links; a route learnt by gossip would dial the node directly
  // and survive a partition.
  const nowhere = opts.routeProxies === true ? await startLinkProxy(0) : undefined;
  nowhere?.cut();
  let stopped = false;

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await Promise.all([...connections].map((nc) => nc.close().catch(() => undefined)));
    await Promise.all(servers.map((s) => s.stop()));
    await Promise.all([...links.map((l) => l.proxy.close()), nowhere?.close()]);
    await rm(root, { recursive: true, force: true });
    untrackRoot();
  };

  try {
    const names = Array.from({ length: size }, (_, i) => nodeName(name, i));
    const tls = opts.routeTls === true ? await makeRouteTls(join(root, "route-tls"), names) : undefined;
    // Route ports are chosen free, then bound by nats-server a moment later;
    // on a busy machine another process can take one in between (seen in
    // CI). Such a start is retried on fresh ports in a fresh directory.
    for (let attempt = 1; ; attempt++) {
      const routePorts = await Promise.all(Array.from({ length: size }, () => freeLoopbackPort()));
      if (opts.routeProxies === true) {
        for (const [from] of routePorts.entries()) {
          for (const [to, port] of routePorts.entries()) if (from !== to) links.push({ from, to, proxy: await startLinkProxy(port) });
        }
      }
      const routesOf = (i: number): string[] =>
        opts.routeProxies === true
          ? links.filter((l) => l.from === i).map((l) => `nats-route://127.0.0.1:${l.proxy.port}`)
          : routePorts.filter((_, j) => j !== i).map((p) => `nats-route://127.0.0.1:${p}`);
      const started = await Promise.allSettled(
        routePorts.map(async (routePort, i) => {
          const serverName = names[i]!;
          const nodeTls = tls?.[i];
          const dir = join(root, `start-${attempt}`, serverName);
          await mkdir(dir, { recursive: true, mode: 0o700 });
          const config = mergeNatsConfig(
            testServerDefaults(dir, jetstream),
            {
              server_name: serverName,
              cluster: {
                name,
                listen: `127.0.0.1:${routePort}`,
                routes: routesOf(i),
                ...(nowhere !== undefined ? { advertise: `127.0.0.1:${nowhere.port}` } : {}),
                ...(nodeTls !== undefined ? { tls: { cert_file: nodeTls.cert, key_file: nodeTls.key, ca_file: nodeTls.ca, verify: true, timeout: 5 } } : {}),
              },
              // As the production cluster: an acknowledged write is fsynced first.
              ...(jetstream ? { jetstream: { sync_interval: "always" } } : {}),
            },
            opts.config,
          );
          return launchTestServer({ name: serverName, dir, ownsDir: false, config, env: opts.env });
        }),
      );
      const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
      const up = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
      if (failed === undefined) {
        servers.push(...up);
        routeUrls.push(...routePorts.map((p) => `nats-route://127.0.0.1:${p}`));
        break;
      }
      const portTaken = /address already in use/.test(String((failed.reason as Error)?.message ?? failed.reason));
      if (!portTaken || attempt >= 3) {
        servers.push(...up);
        throw failed.reason;
      }
      await Promise.all(up.map((srv) => srv.stop()));
      await Promise.all(links.splice(0).map((l) => l.proxy.close()));
    }
  } catch (err) {
    await stop();
    throw err;
  }

  const nodeNames = Array.from({ length: size }, (_, i) => nodeName(name, i));
  const cluster: TestCluster = {
    name,
    servers,
    routeUrls,
    nodeNames,
    nodeIndex: (serverName) => (serverName === undefined ? -1 : nodeNames.indexOf(serverName)),
    get urls() {
      return servers.map((s) => s.url);
    },
    async connect(connectOpts) {
      const nc = await connect({ servers: cluster.urls, name: `${name}-client`, ...connectOpts });
      connections.add(nc);
      void nc.closed().then(() => connections.delete(nc));
      return nc;
    },
    stopNode: (i) => node(servers, i).halt(),
    startNode: (i) => node(servers, i).resume(),
    async crashNode(i) {
      const s = node(servers, i);
      s.kill("SIGKILL");
      // After SIGKILL, halt() only waits for the exit and marks the node down.
      await s.halt();
    },
    links,
    partition(i) {
      node(servers, i);
      if (links.length === 0) throw new Error(`cluster ${name} was started without routeProxies: nothing to cut`);
      for (const l of links) if (l.from === i || l.to === i) l.proxy.cut();
    },
    heal() {
      for (const l of links) l.proxy.heal();
    },
    async waitForMetaLeader(timeoutMs = opts.readyTimeoutMs ?? 45_000) {
      const running = servers.filter((s) => s.running);
      const nc = await connect({ servers: running.map((s) => s.url), maxReconnectAttempts: -1, ...opts.probeConnect });
      let leaders: (string | undefined)[] = [];
      try {
        const found = await eventually(
          async () => {
            const metas = await Promise.all(running.map(metaClusterOf));
            leaders = metas.map((m) => m?.leader || undefined);
            const leader = leaders[0];
            const ready = leader !== undefined && leaders.every((l) => l === leader) && peersCurrent(metas, running.length) && (await jsApiAnswers(nc)) && (await placementWorks(nc, running.length));
            return ready ? leader : undefined;
          },
          (leader) => leader !== undefined,
          { timeoutMs, intervalMs: 200 },
        ).catch(() => {
          throw new Error(`cluster ${name}: no JetStream meta leader within ${timeoutMs} ms (nodes report ${JSON.stringify(leaders)})`);
        });
        return found as string;
      } finally {
        await nc.close().catch(() => undefined);
      }
    },
    stop,
  };

  if (jetstream) {
    try {
      await cluster.waitForMetaLeader();
    } catch (err) {
      await stop();
      throw err;
    }
  }
  return cluster;
}

/** A started cluster with a meta leader and one connection per node, from {@link startConnectedCluster}. */
export interface ConnectedCluster {
  readonly cluster: TestCluster;
  /** One connection per node, in node order, reconnecting for ever (nodes are frozen and stopped under them). */
  readonly conns: NatsConnection[];
  /** Resumes any node left frozen (SIGSTOP), closes the connections and stops the cluster. */
  readonly stop: () => Promise<void>;
}

/**
 * The set-up of the tests that freeze or stop nodes under load: a cluster
 * of `size` with its meta leader elected and a connection to every node.
 * Its `stop` first resumes frozen nodes, which would otherwise hold the
 * teardown.
 */
export async function startConnectedCluster(size = 3, opts: TestClusterOptions = {}): Promise<ConnectedCluster> {
  const cluster = await startTestCluster(size, opts);
  let conns: NatsConnection[] = [];
  const stop = async (): Promise<void> => {
    for (const s of cluster.servers) if (s.running) s.kill("SIGCONT");
    await Promise.all(conns.map((nc) => nc.close().catch(() => undefined)));
    await cluster.stop();
  };
  try {
    await cluster.waitForMetaLeader();
    conns = await Promise.all(cluster.servers.map((s) => s.connect({ maxReconnectAttempts: -1 })));
  } catch (err) {
    await stop();
    throw err;
  }
  return { cluster, conns, stop };
}

/**
 * Creates (or opens) an R`replicas` KV bucket on a freshly started cluster.
 * The meta leader can still count a peer as offline for a moment after the
 * cluster became ready (seen under CI load: "no suitable peers for
 * placement, peer offline"), so the create is retried for up to 15 s.
 */
export async function createReplicatedKv(nc: NatsConnection, bucket: string, opts: Partial<KvOptions> = {}, replicas = 3): Promise<KV> {
  return retryUntil(() => new Kvm(nc).create(bucket, { ...opts, replicas }), { timeoutMs: 15_000, intervalMs: 200 });
}
