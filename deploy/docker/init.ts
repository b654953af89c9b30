/**
 * The compose stack's one-shot `init` (and `bootstrap`) container.
 *
 *   init       Provisions the state dir (UNIBUS_HOME, the `state` volume) with
 *              the same code as `unibus up` (provisionHome), builds the server
 *              config with the same builder (buildServerConfig +
 *              calloutAuthorization: ONE config builder), and hands each
 *              container only what it needs, each in its own volume:
 *                /out/nats/      nats.conf + jetstream.key (read by nats-launch)
 *                /out/nats-N/    the same per node with UNIBUS_CLUSTER_NODES=nats-1,…
 *                                (routes: mutual TLS, pool_size, no_advertise;
 *                                UNIBUS_CLIENT_TLS=1: TLS required on the client port)
 *                /out/svc-<name> identity.id (+ callout seeds / system.id) + env
 *                                (cluster: the gateway's replica.psk, made once
 *                                in the state dir, and the cluster name; the
 *                                callout lets unknown keys do the handshake only)
 *   bootstrap  Seeds admin #0 (idempotent), as `unibus up` does after start.
 *
 * Files are 0600 and dirs 0700, owned by the image's non-root user; nothing
 * secret is printed. Re-running reuses everything (nothing is regenerated over
 * existing state), so `docker compose up` is idempotent.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, chmod, open, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import {
  ALL_SERVICES,
  DEFAULT_ADMIN_HANDLE,
  JETSTREAM_KEY_ENV,
  ServiceName,
  bootstrapAdmin,
  buildServerConfig,
  calloutAuthorization,
  ensurePrivateDir,
  jetStreamSyncInterval,
  loadIdentityForCli,
  provisionHome,
  renderEnvFile,
  resolveHome,
  serviceIdentityFile,
  writePrivateFile,
} from "@unibus/cli";
import type { HomeLayout, ProvisionedServices } from "@unibus/cli";
import { CalloutEnv } from "@unibus/contracts";
import { mergeNatsConfig, renderNatsConfig } from "@unibus/natsd";
import type { NatsConfig } from "@unibus/natsd";

/** Where init writes each container's share (volumes mounted by compose). */
const OUT = process.env["UNIBUS_INIT_OUT"] ?? "/out";
/** Where the nats container mounts its data volume. */
const NATS_DATA_DIR = "/data";
const CLIENT_PORT = 4222;
const MONITOR_PORT = 8222;
/** NATS WebSocket (admin panel) inside the container; compose publishes it on the host's loopback only. */
const WEBSOCKET_PORT = 8080;
const CLUSTER_PORT = 6222;
const BOOTSTRAP_WAIT_MS = 90_000;
/** Cluster only: where each nats container mounts its route TLS dir (read-only). */
const ROUTE_TLS_DIR = "/etc/unibus-routes";
const ROUTE_POOL_SIZE = 3;
/** The nats cluster name; the replica gateway derives the handshake's cluster id from the same name. */
const CLUSTER_NAME = "unibus";
/** The replica PSK in the state dir and in the gateway's share. */
const REPLICA_PSK_FILE = "replica.psk";
/** `1`: every node requires TLS on its client port (cluster only). */
const CLIENT_TLS_ENV = "UNIBUS_CLIENT_TLS";

function say(line: string): void {
  process.stdout.write(`[unibus init] ${line}\n`);
}

/** `UNIBUS_CLUSTER_NODES=nats-1,nats-2,nats-3`: one config per node with routes to the others. */
function clusterNodes(): string[] {
  return (process.env["UNIBUS_CLUSTER_NODES"] ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/**
 * The client-port certificate each node presents with `UNIBUS_CLIENT_TLS=1`:
 * signed by the client CA (not the route CA) and mounted with the route
 * material by deploy/scripts/cluster-certs.sh. Anything but `1`/`0`/unset
 * stops init rather than leave the port in plaintext by mistake.
 */
function clientTls(clustered: boolean): { certFile: string; keyFile: string } | undefined {
  const raw = (process.env[CLIENT_TLS_ENV] ?? "").trim();
  if (raw === "" || raw === "0") return undefined;
  if (raw !== "1") throw new Error(`${CLIENT_TLS_ENV} must be 1 or 0, got ${JSON.stringify(raw)}`);
  if (!clustered) throw new Error(`${CLIENT_TLS_ENV}=1 needs UNIBUS_CLUSTER_NODES: only the cluster nodes have a client-port certificate`);
  return { certFile: join(ROUTE_TLS_DIR, "client.pem"), keyFile: join(ROUTE_TLS_DIR, "client.key") };
}

function serverConfig(state: ProvisionedServices, serverName: string, routes: readonly string[] | undefined): NatsConfig {
  const tls = clientTls(routes !== undefined);
  const base = buildServerConfig({
    host: "0.0.0.0",
    port: CLIENT_PORT,
    // On the compose network, never published to the host: the healthcheck
    // (nats-launch probe) and the healthz service read it, so /healthz reports
    // the server's own posture (version, mode, meta leader, TLS, fsync policy)
    // instead of nulls. It has no authentication, which is why no port mapping
    // exposes it; only containers on this project's network reach it.
    monitorPort: MONITOR_PORT,
    monitorHost: "0.0.0.0",
    // All interfaces inside the container so the port can be published; compose binds it to 127.0.0.1.
    websocketPort: WEBSOCKET_PORT,
    websocketHost: "0.0.0.0",
    jetstreamDir: NATS_DATA_DIR,
    serverName,
    // `always` in a cluster: an acknowledged write is on disk on a quorum of nodes.
    syncInterval: jetStreamSyncInterval(process.env, routes !== undefined),
    // TLS hides subjects, inboxes and sizes from the network between clients and nodes.
    ...(tls === undefined ? {} : { tls }),
    authorization: calloutAuthorization({
      calloutIssuerPublic: state.calloutIssuerPublic,
      calloutXkeyPublic: state.calloutXkeyPublic,
      services: new Map([...state.services].map(([name, id]) => [name, id.principal])),
      systemPublic: state.system.principal,
      bootstrapPublic: state.bootstrap.principal,
    }),
  });
  if (routes === undefined) return base;
  return mergeNatsConfig(base, {
    cluster: {
      name: CLUSTER_NAME,
      listen: `0.0.0.0:${CLUSTER_PORT}`,
      routes: routes.map((h) => `nats-route://${h}:${CLUSTER_PORT}`),
      // Equal on every node (a mismatch breaks the routes); the default, written out.
      pool_size: ROUTE_POOL_SIZE,
      // Do not gossip container addresses to peers or clients: clients use their seed list.
      no_advertise: true,
      // Routes are mutual TLS (architecture §7): a route CA of their own, separate from any
      // client CA; each node's cert has serverAuth+clientAuth and SAN DNS:<node>.
      // Made on the host by deploy/scripts/cluster-certs.sh, mounted read-only.
      tls: {
        cert_file: join(ROUTE_TLS_DIR, "node.pem"),
        key_file: join(ROUTE_TLS_DIR, "node.key"),
        ca_file: join(ROUTE_TLS_DIR, "route-ca.pem"),
        verify: true,
        timeout: 3,
      },
    },
  });
}

async function copyPrivate(from: string, to: string): Promise<void> {
  await copyFile(from, to);
  await chmod(to, 0o600);
}

/** Replaces a share dir's content: a share holds exactly what its container needs, nothing stale. */
async function resetShare(dir: string): Promise<void> {
  await ensurePrivateDir(dir);
  for (const entry of await readdir(dir)) await rm(join(dir, entry), { recursive: true, force: true });
}

/**
 * What `unibus node start` merges over a compose node's base config (the file
 * wins): the bus's authorization, client TLS, monitoring, WebSocket and the
 * route TLS and options. The name, store, key, listen address and routes are
 * the node's own flags, so they are left out.
 */
function nodeBusConfig(config: NatsConfig): NatsConfig {
  const { server_name: _name, host: _host, port: _port, jetstream: _js, cluster, ...rest } = config as NatsConfig & { cluster?: Record<string, unknown> };
  if (cluster === undefined) return rest;
  const { name: _cluster, listen: _listen, routes: _routes, ...routeOptions } = cluster;
  return { ...rest, cluster: routeOptions } as NatsConfig;
}

/** Written by `enroll` once every node runs on its own key: from then on no bootstrap key exists or is made. */
const ADOPTED_MARKER = "cluster.adopted";
/** Written by `enroll` once `cluster init` ran and its recovery secret was saved. */
const INITIALISED_MARKER = "cluster.initialised";

async function writeNatsShare(home: HomeLayout, state: ProvisionedServices, bootstrapKey: boolean): Promise<void> {
  const nodes = clusterNodes();
  const targets = nodes.length === 0 ? [{ dir: join(OUT, "nats"), name: "unibus-nats", routes: undefined }] : nodes.map((n) => ({ dir: join(OUT, n), name: n, routes: nodes.filter((o) => o !== n) }));
  for (const t of targets) {
    await resetShare(t.dir);
    // The key file, not the key: nats-launch (or a cluster node's boot step) reads it into nats-server's environment only.
    if (bootstrapKey) await copyPrivate(home.jetstreamKeyFile, join(t.dir, "jetstream.key"));
    const config = serverConfig(state, t.name, t.routes);
    await writePrivateFile(join(t.dir, "nats.conf"), renderNatsConfig(config));
    if (t.routes !== undefined) await writePrivateFile(join(t.dir, "bus.json"), `${JSON.stringify(nodeBusConfig(config), null, 2)}\n`);
    say(`nats config for ${t.name}${t.routes ? ` (routes to ${t.routes.join(", ")})` : ""}${clientTls(t.routes !== undefined) ? " (client TLS)" : ""} in ${t.dir} (store ${NATS_DATA_DIR}, key via ${JETSTREAM_KEY_ENV})`);
  }
}

/**
 * The replica gateway's PSK (32 random bytes, hex), made once in the state
 * dir and never regenerated: nodes that registered with it keep working
 * across `down`/`up`. Only the gateway's share gets a copy; a node operator
 * copies it out of the state volume over a private channel.
 */
async function ensureReplicaPsk(home: HomeLayout): Promise<string> {
  const path = join(home.secretsDir, REPLICA_PSK_FILE);
  try {
    // "wx": never replace a PSK an earlier init made.
    const fh = await open(path, "wx", 0o600);
    try {
      await fh.writeFile(`${randomBytes(32).toString("hex")}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    say(`created replica PSK ${path}`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  return path;
}

async function writeServiceShares(home: HomeLayout, state: ProvisionedServices): Promise<void> {
  for (const name of ALL_SERVICES) {
    const dir = join(OUT, `svc-${name}`);
    await resetShare(dir);
    await copyPrivate(serviceIdentityFile(home, name), join(dir, "identity.id"));
    // Not secret: what the service entry point puts in the environment besides paths.
    const env: Record<string, string> = {};
    if (name === ServiceName.authCallout) {
      await copyPrivate(home.calloutIssuerSeedFile, join(dir, "callout-issuer.seed"));
      await copyPrivate(home.calloutXkeySeedFile, join(dir, "callout-xkey.seed"));
      // A joining node is not in the directory yet: it may log in to publish the replica handshake and nothing else.
      if (clusterNodes().length > 0) env[CalloutEnv.bootstrapAccess] = "true";
    }
    if (name === ServiceName.membership) {
      await copyPrivate(home.systemIdentityFile, join(dir, "system.id"));
      env["UNIBUS_BOOTSTRAP_PRINCIPAL"] = state.bootstrap.principal;
    }
    // Without a PSK the gateway answers every handshake AuthRequired: the cluster gets one, so nodes can join through it.
    if (name === ServiceName.replicaGateway && clusterNodes().length > 0) {
      await copyPrivate(await ensureReplicaPsk(home), join(dir, REPLICA_PSK_FILE));
      env["UNIBUS_CLUSTER_NAME"] = CLUSTER_NAME;
    }
    await writePrivateFile(join(dir, "env"), renderEnvFile(env));
  }
  say(`service shares written for ${ALL_SERVICES.join(", ")}`);
}

async function init(): Promise<void> {
  const home = resolveHome(process.env, process.cwd());
  // Once every node is adopted the bootstrap key is gone for good: making a new one would put a store key back on this disk.
  const adopted = existsSync(join(home.root, ADOPTED_MARKER));
  const state = adopted ? await provisionHome(home, ALL_SERVICES, { storeKey: false }) : await provisionHome(home, ALL_SERVICES);
  say(`state dir ${home.root}${adopted ? " (every node on its own key: no bootstrap key)" : ""}`);
  for (const line of state.created) say(`created ${line}`);
  await writeNatsShare(home, state, !adopted);
  await writeServiceShares(home, state);
  say(`admin #0 identity: ${home.adminIdentityFile} (copy it out with deploy/scripts/compose-admin.sh)`);
}

async function bootstrap(): Promise<void> {
  // Reads the two identities only (the state volume is mounted read-only here).
  const home = resolveHome(process.env, process.cwd());
  const bootstrapIdentity = await loadIdentityForCli(home.bootstrapIdentityFile);
  const admin = await loadIdentityForCli(home.adminIdentityFile);
  const server = process.env["UNIBUS_URL"] ?? `nats://nats:${CLIENT_PORT}`;
  const boot = await bootstrapAdmin({
    settings: { server, identityPath: home.bootstrapIdentityFile, source: home.root },
    bootstrapIdentity,
    adminPrincipal: admin.principal,
    handle: DEFAULT_ADMIN_HANDLE,
    waitMs: BOOTSTRAP_WAIT_MS,
  });
  say(boot.created ? `bootstrapped admin #0 ${boot.user.principal}` : `admin #0 exists: ${boot.user.principal}`);
}

/** Where `enroll` mounts each node's home volume (the node mounts it at /node). */
const NODE_HOMES = "/nodes";
/** Markers the nodes write once they run on their own key (no secret in this volume). */
const BOOT_DIR = "/boot";
/** A host directory (0700, uid 10001) the operator empties: the recovery secret is written there once. */
const RECOVERY_DIR = "/recovery";
const RECOVERY_FILE = "recovery.secret";
const CLI = "libs/cli/bin/unibus.mjs";
/** The rolling rebuild of three nodes (each: checks, restart on an empty store, catch-up). */
const ADOPT_WAIT_MS = 900_000;

/**
 * Runs the unibus CLI as admin #0 (or a node, with its home in `env`) and
 * returns its standard output, which holds the recovery secret for `cluster
 * init --json`: it is never echoed. Secrets pass as 0600 files, never argv.
 */
async function cli(args: string[], env: Record<string, string> = {}): Promise<string> {
  const { execFile } = await import("node:child_process");
  return new Promise((done, fail) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, UNIBUS_IDENTITY: "/state/admin.id", ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err !== null) fail(new Error(`unibus ${args.slice(0, 2).join(" ")} failed: ${stderr.trim().split("\n").slice(-1)[0] ?? err.message}`));
      else done(stdout);
    });
  });
}

async function retry<T>(what: string, ms: number, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      say(`waiting: ${what} (${(err as Error).message})`);
      await new Promise((r) => setTimeout(r, 2_000));
    }
  }
}

/** Overwrites a key file with zeros before unlinking it, as `node adopt` does with a retired key. */
async function destroyKeyFile(path: string): Promise<void> {
  if (!existsSync(path)) return;
  const fh = await open(path, "r+");
  try {
    const { size } = await fh.stat();
    await fh.write(Buffer.alloc(size), 0, size, 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rm(path, { force: true });
}

/**
 * The compose cluster's own nodes through the join flow, on the first `up`:
 * `cluster init` (the recovery secret goes to the host's recovery directory,
 * 0600, never to a log), then for each node ticket → register (its home in its
 * own volume: join key, node unlock key) → approve → commit (wrapped CUK). The
 * nodes then rebuild one at a time onto their own keys (deploy/docker/node-boot.ts);
 * once all three are adopted the bootstrap key is destroyed. Idempotent: each
 * node's state in the gateway decides its next step, and a stack whose nodes
 * are all adopted is left alone.
 */
async function enroll(): Promise<void> {
  const home = resolveHome(process.env, process.cwd());
  if (existsSync(join(home.root, ADOPTED_MARKER))) {
    say("every node already runs on its own key");
    return;
  }
  const nodes = clusterNodes();
  if (!existsSync(join(home.root, INITIALISED_MARKER))) {
    const secretPath = join(RECOVERY_DIR, RECOVERY_FILE);
    if (existsSync(secretPath)) throw new Error(`${secretPath} exists: refusing to initialise another cluster over an unknown recovery secret`);
    const out = await retry("the replica gateway", 180_000, () => cli(["cluster", "init", "--name", CLUSTER_NAME, "--json"]));
    const secret = (JSON.parse(out) as { recoverySecret: string }).recoverySecret;
    const fh = await open(secretPath, "wx", 0o600);
    try {
      await fh.writeFile(`${secret}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await writePrivateFile(join(home.root, INITIALISED_MARKER), `${new Date().toISOString()}\n`);
    say(`cluster initialised; the RECOVERY SECRET is in ${RECOVERY_FILE} of the recovery directory: move it offline`);
  }
  const psk = join(home.secretsDir, REPLICA_PSK_FILE);
  for (const node of nodes) {
    const nodeHome = join(NODE_HOMES, node);
    const nodeEnv = { UNIBUS_NODE_HOME: nodeHome, UNIBUS_REPLICA_PSK_FILE: join(nodeHome, REPLICA_PSK_FILE) };
    const stateOf = async (): Promise<string | undefined> => (JSON.parse(await cli(["node", "list", "--json"])) as { nodes: { nodeId: string; state: string }[] }).nodes.find((n) => n.nodeId === node)?.state;
    let state = await retry("the node list", 120_000, stateOf);
    if (state === "UP" && existsSync(join(nodeHome, "cuk.wrapped"))) continue;
    await copyPrivate(psk, join(nodeHome, REPLICA_PSK_FILE));
    if (state === undefined) {
      const ticket = (JSON.parse(await cli(["node", "ticket", node, "--json"])) as { ticket: string }).ticket;
      const ticketFile = join("/tmp", `${node}.ticket`);
      await writePrivateFile(ticketFile, `${ticket}\n`);
      try {
        await retry(`${node} register`, 60_000, () => cli(["node", "register", node, "--cluster", CLUSTER_NAME, "--ticket-file", ticketFile], nodeEnv));
      } finally {
        await rm(ticketFile, { force: true });
      }
      state = "NEW";
    }
    if (state === "NEW") await cli(["node", "approve", node]);
    if (state !== "UP") await retry(`${node} commit`, 60_000, () => cli(["node", "commit"], nodeEnv));
    if (!existsSync(join(nodeHome, "cuk.wrapped"))) throw new Error(`${node} is UP but its home has no wrapped unlock key: rebuild its volume`);
    say(`${node} enrolled (UP); it moves onto its own key when its turn comes`);
  }
  const deadline = Date.now() + ADOPT_WAIT_MS;
  while (!nodes.every((n) => existsSync(join(BOOT_DIR, `${n}.adopted`)))) {
    if (Date.now() > deadline) throw new Error(`not every node adopted its own key in ${ADOPT_WAIT_MS / 1000} s (see the nats-N logs)`);
    await new Promise((r) => setTimeout(r, 2_000));
  }
  // No node's store opens with a key on this disk any more: the bootstrap key goes.
  await writePrivateFile(join(home.root, ADOPTED_MARKER), `${new Date().toISOString()}\n`);
  await destroyKeyFile(home.jetstreamKeyFile);
  for (const n of nodes) await destroyKeyFile(join(OUT, n, "jetstream.key"));
  say(`every node runs on its own derived key; the bootstrap key is destroyed`);
}

const mode = process.argv[2] ?? "init";
try {
  if (mode === "init") await init();
  else if (mode === "bootstrap") await bootstrap();
  else if (mode === "enroll") await enroll();
  else throw new Error(`unknown mode ${mode} (init | bootstrap | enroll)`);
} catch (err) {
  process.stderr.write(`[unibus init] ${mode} failed: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
