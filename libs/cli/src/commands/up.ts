import { existsSync } from "node:fs";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { CalloutEnv, HealthzEnv, MembershipEnv } from "@unibus/contracts";
import { nkeyAuthenticator } from "@unibus/crypto";
import { PARENT_LIFELINE_PRELOAD, accountJetStreamLimitsFromEnv, retry } from "@unibus/kit";
import type { AccountJetStreamLimits } from "@unibus/kit";
import {
  MIN_NATS_SERVER_VERSION,
  NatsServerFile,
  NatsServerNotFoundError,
  NatsServerOrphanError,
  NatsServerStartError,
  findNatsServer,
  startBusWatchdog,
  startNatsServer,
  stopOrphanNatsServer,
} from "@unibus/natsd";
import type { Identity } from "@unibus/crypto";
import type { BusWatchdog, NatsServerProcess } from "@unibus/natsd";
import { parseCommandArgs } from "../args.js";
import type { Command } from "../command.js";
import { CliError, ExitCode } from "../errors.js";
import { EnvVar, ensurePrivateDir, renderEnvFile, resolveHome, serviceIdentityFile, writePrivateFile } from "../home.js";
import type { HomeLayout } from "../home.js";
import type { CliIo } from "../io.js";
import { embeddedBundle } from "../up/bundle.js";
import { formatChildLine, serviceOfLine } from "../up/child-log.js";
import { acquireHomeLock, isProcessAlive } from "../up/lock.js";
import type { HomeLock } from "../up/lock.js";
import { assertPortFree, freePort, portFromEnv } from "../up/ports.js";
import { ensureLoopbackTls } from "../up/tls.js";
import type { LoopbackTls } from "../up/tls.js";
import { fileExists, provisionHome } from "../up/provision.js";
import type { ProvisionedHome, ProvisionedServices } from "../up/provision.js";
import { JETSTREAM_CIPHER, JETSTREAM_KEY_ENV, buildServerConfig, homeAuthorization, jetStreamSyncInterval } from "../up/server-config.js";
import { streamDirs } from "../store/maintenance.js";
import { ALL_SERVICES, EMBEDDED_SERVICES_ENV, REPO_ROOT, ServiceName, ServiceProcesses, embeddedEntryPoint, serviceAvailability } from "../up/services.js";
import type { ServiceAvailability } from "../up/services.js";
import { Supervisor } from "../up/supervisor.js";
import type { ChildSpec } from "../up/supervisor.js";
import { DEFAULT_ADMIN_HANDLE, bootstrapAdmin, waitForLogin } from "./admin.js";
import { STANDALONE_SUFFIX, clusteredBusConfig, readClusterRecord } from "../cluster/convert.js";
import type { ClusterRecord } from "../cluster/convert.js";

const DEFAULT_PORT = 4222;
/** Read by auth-callout (the launcher contract in @unibus/contracts). */
const CALLOUT_ISSUER_SEED_FILE_ENV = CalloutEnv.issuerSeedFile;
const CALLOUT_XKEY_SEED_FILE_ENV = CalloutEnv.xkeySeedFile;
/** Read by membership. */
const SYS_IDENTITY_ENV = MembershipEnv.sysIdentity;
const BOOTSTRAP_PRINCIPAL_ENV = MembershipEnv.bootstrapPrincipal;
/** `one` (default) or `each`: see {@link ServiceProcesses}. */
const SERVICE_PROCESSES_ENV = "UNIBUS_SERVICE_PROCESSES";
/** Read by every service (kit's service-main): replicas of the buckets it creates. */
const JS_REPLICAS_ENV = "UNIBUS_JS_REPLICAS";
/** Name of the one supervised process that runs every service. */
const EMBEDDED_CHILD = "services";
/** How long `up` waits for membership to answer the admin bootstrap after the services start. */
const BOOTSTRAP_WAIT_MS = 45_000;
const DEFAULT_MONITOR_PORT = 8222;
/** Where healthz serves the admin panel (a static bundle, no backend). */
const PANEL_PATH = "/panel/";
/** NATS WebSocket port (loopback only): the admin panel's way onto the bus. */
const DEFAULT_WS_PORT = 4280;
/** The embedded default listens on loopback only: a laptop bus is not a network service. */
const HOST = "127.0.0.1";

const upHelp = `Usage: unibus up

Runs the whole bus on this machine (what \`npm start\` runs): a local
nats-server with JetStream encrypted at rest, and every service, by default
all in one supervised Node process (each on its own connection, with its own
identity). Ctrl-C stops everything.

On the first run it creates, in the state dir (mode 0700, files 0600):
  data/                       JetStream store
  secrets/jetstream.key       at-rest encryption key (back it up: without it the data is unreadable)
  secrets/callout-issuer.seed key the auth callout signs logins with
  secrets/callout-xkey.seed   key encrypting the server <-> callout traffic
  identities/<svc>.id         one identity per service
  identities/system.id        system-account user (membership's kicks)
  identities/bootstrap.id     internal identity that may only seed admin #0
  admin.id                    admin #0
  env                         UNIBUS_URL, UNIBUS_WS_URL, UNIBUS_IDENTITY and UNIBUS_HEALTHZ_URL for other commands
  tls/                        with --tls: loopback CA (ca.pem) and server certificate
Later runs reuse all of it; no key is ever regenerated over an existing one.

Every client, admins included, is authorized by the auth callout (docs/architecture.md §4);
once the services are up, admin.id is seeded as admin #0 (idempotent).

On a home adopted as a cluster node (\`unibus node adopt\` finished: cluster.json
has node_home and adopted_at) it runs the services only: the node's nats-server
runs from its node home (\`unibus node start\`), found through the ports file
it writes there (or UNIBUS_URL, and UNIBUS_MONITOR_PORT for healthz). No server,
no store key: every identity and seed must already exist (the cluster's
authorization names their public keys), and none is created.

Environment:
  UNIBUS_HOME           state dir (default: ./.unibus)
  UNIBUS_PORT           client port (default ${DEFAULT_PORT})
  UNIBUS_MONITOR_PORT   monitoring port on 127.0.0.1 (default ${DEFAULT_MONITOR_PORT})
  UNIBUS_HEALTHZ_PORT   healthz HTTP port on 127.0.0.1: /livez /readyz /healthz /metrics
                        (default: a free port; its URL goes to the env file as UNIBUS_HEALTHZ_URL)
  UNIBUS_WS_PORT        NATS WebSocket port on 127.0.0.1, for the admin panel (default ${DEFAULT_WS_PORT})
  UNIBUS_LOG_LEVEL      services' log level
  UNIBUS_SERVICE_PROCESSES
                        "one" (default): every service in one Node process, bundled to
                        JavaScript on demand (under run/ in the state dir); "each": one
                        process per service through the TypeScript loader, restarted alone
  UNIBUS_JS_MAX_FILE, UNIBUS_JS_MAX_MEMORY, UNIBUS_JS_MAX_STREAMS, UNIBUS_JS_MAX_CONSUMERS
                        JetStream limits of the UNIBUS account (default 16 GiB file,
                        256 MiB memory, 4096 streams, 65536 consumers)
  UNIBUS_JS_SYNC_INTERVAL
                        JetStream fsync interval: "always" (every acknowledged write is on
                        disk first; slower) or a duration (default: the server's 2m; a
                        power loss can lose writes acknowledged in the last interval)
  UNIBUS_ROOM_MAX_*, UNIBUS_ROOM_CEILING_MAX_*
                        persisted-room quota defaults and ceilings (membership; see README)
  NATS_SERVER_BIN       nats-server to use (>= ${MIN_NATS_SERVER_VERSION}, checked at start; found or fetched otherwise)

Options:
  --tls                 require TLS on the client port: a loopback CA and server certificate
                        are made in tls/ (openssl), the URL becomes tls://127.0.0.1:PORT and
                        env gets UNIBUS_TLS_CA so CLI commands trust that CA. The callout and
                        nkey signatures are unchanged; TLS hides subjects and sizes on the wire.
  -h, --help            show this help`;

/** `unibus up`. */
export const upCommand: Command = {
  name: "up",
  summary: "run the bus locally: nats-server + every service (what `npm start` runs)",
  help: upHelp,
  async run(args, io) {
    const { flags } = parseCommandArgs(args, { tls: { type: "boolean" } }, { command: "up", maxPositionals: 0 });
    if (flags.help) {
      io.out(upHelp);
      return ExitCode.ok;
    }
    return runUp(io, flags.tls === true);
  },
};

function say(io: CliIo, line: string): void {
  io.out(`[unibus up] ${line}`);
}

async function runUp(io: CliIo, withTls: boolean): Promise<number> {
  const home = resolveHome(io.env, io.cwd);
  const port = portFromEnv(io.env, EnvVar.port, DEFAULT_PORT);
  const monitorPort = portFromEnv(io.env, EnvVar.monitorPort, DEFAULT_MONITOR_PORT);
  const healthzPortSetting = portFromEnv(io.env, EnvVar.healthzPort, 0);
  const wsPort = portFromEnv(io.env, EnvVar.wsPort, DEFAULT_WS_PORT);
  let jetstreamLimits: AccountJetStreamLimits;
  let syncInterval: string | undefined;
  try {
    jetstreamLimits = accountJetStreamLimitsFromEnv(io.env);
    syncInterval = jetStreamSyncInterval(io.env, false);
  } catch (err) {
    throw new CliError((err as Error).message, { cause: err });
  }

  await ensurePrivateDir(home.root);
  const lock = await acquireHomeLock(home.lockFile);
  let server: NatsServerProcess | undefined;
  let watchdog: BusWatchdog | undefined;
  let supervisor: Supervisor | undefined;
  try {
    // The lock may have been taken over from a killed `up` whose nats-server
    // survived it: two servers on one JetStream store corrupt it.
    await stopOrphanServer(io, home);
    // A home promoted by `unibus cluster promote` runs as a cluster node, and its services create buckets with its replicas.
    const clusterRecord = await readClusterRecord(home);
    // A promotion that stopped after moving the store aside: starting here would open an empty store.
    if (clusterRecord === undefined && (await fileExists(`${home.jetstreamDir}${STANDALONE_SUFFIX}`))) {
      throw new CliError(
        `${home.jetstreamDir}${STANDALONE_SUFFIX} holds this bus's store: a \`unibus cluster promote\` did not finish. ` +
          `Run it again, or to stay a single node move ${home.jetstreamDir}${STANDALONE_SUFFIX} back to ${home.jetstreamDir}.`,
      );
    }
    // An adopted first node runs from its node home on its derived key: provisioning here would make a new disk key beside no store.
    if (clusterRecord?.node_home !== undefined) {
      if (clusterRecord.adopted_at === undefined) {
        throw new CliError(
          `${home.root} is cluster node ${clusterRecord.server_name}, which runs from the node home ${clusterRecord.node_home} on its own derived key ` +
            `(unibus node adopt, not finished: run it again): start its server with unibus node start --home ${clusterRecord.node_home}`,
        );
      }
      return await runServicesOnly(io, home, clusterRecord as AdoptedRecord, { withTls, healthzPortSetting, lock });
    }
    const state = await provisionHome(home, ALL_SERVICES);
    say(io, `state dir ${home.root}`);
    if (clusterRecord !== undefined) say(io, `cluster node ${clusterRecord.server_name} of ${clusterRecord.cluster_name} (R${clusterRecord.replicas})`);
    for (const line of state.created) say(io, `created ${line}`);

    await assertPortFree(HOST, port, "client", EnvVar.port);
    await assertPortFree(HOST, monitorPort, "monitoring", EnvVar.monitorPort);
    // Not one of the server's ports: they are checked free above but not bound until it starts.
    const healthzPort = healthzPortSetting === 0 ? await freePort(HOST, [port, monitorPort, wsPort]) : healthzPortSetting;
    if (healthzPortSetting !== 0) await assertPortFree(HOST, healthzPort, "healthz", EnvVar.healthzPort);
    const health: Omit<HealthzChild, "wsUrl"> = { listen: `${HOST}:${healthzPort}`, url: `http://${HOST}:${healthzPort}`, monitorUrl: `http://${HOST}:${monitorPort}` };
    await assertPortFree(HOST, wsPort, "WebSocket", EnvVar.wsPort);

    let tls: LoopbackTls | undefined;
    if (withTls) {
      const made = await ensureLoopbackTls(home);
      tls = made.tls;
      if (made.created) say(io, `created loopback TLS CA ${tls.caFile} and server certificate`);
    }

    const bin = await findServerBinary(io);
    server = await startServer(home, state, { port, monitorPort, wsPort, bin, jetstreamLimits, syncInterval, tls, clusterRecord });
    watchdog = await armWatchdog(server);
    const guard = watchdog;
    const url = tls === undefined ? server.url : `tls://${HOST}:${server.port}`;
    // A TLS bus serves the panel's WebSocket with the same certificate (wss).
    const wsUrl = `${tls === undefined ? "ws" : "wss"}://${HOST}:${wsPort}`;
    const loadedStreams = await checkBusReady(url, membershipIdentity(state), tls?.caFile);
    await assertStoreOpened(home, loadedStreams);
    say(io, `nats-server pid ${server.pid} ready at ${url} (JetStream encrypted at rest, monitoring http://127.0.0.1:${monitorPort})`);

    await writePrivateFile(
      home.envFile,
      renderEnvFile({
        [EnvVar.url]: url,
        [EnvVar.wsUrl]: wsUrl,
        [EnvVar.identity]: home.adminIdentityFile,
        [EnvVar.healthzUrl]: health.url,
        ...(tls === undefined ? {} : { [EnvVar.tlsCa]: tls.caFile }),
      }),
    );

    const availability = serviceAvailability();
    const missing = availability.filter((s) => !s.available);
    const available = availability.filter((s) => s.available);
    const serviceIo: CliIo = clusterRecord === undefined ? io : { ...io, env: { ...io.env, [JS_REPLICAS_ENV]: String(clusterRecord.replicas) } };
    const specs = await serviceChildren(serviceIo, available, url, home, state, { ...health, wsUrl }, tls);
    const width = Math.max(10, ...ALL_SERVICES.map((n) => n.length));
    supervisor = new Supervisor(
      specs,
      {
        // The one process's lines name their service (`svc`), so the prefix still says which.
        line: (name, _stream, line) => io.out(formatChildLine(name === EMBEDDED_CHILD ? serviceOfLine(line, name) : name, line, width)),
        notice: (message) => say(io, message),
      },
      {
        onChildrenChanged: (pids) => {
          // The watchdog ends them within 2 s if we are killed, even one too busy to notice its lifeline.
          guard.guard(pids);
          // A start taking over after a crash waits for these before it starts its own bus.
          void lock.recordChildren(pids).catch((err: unknown) => say(io, `cannot record children in ${lock.path}: ${String(err)}`));
        },
      },
    );
    supervisor.start();

    // Every start: cheap, idempotent, and it repairs a home whose first run stopped before the admin existed.
    const boot = await ensureAdmin(io, home, state, url, tls);

    io.out("");
    io.out("  auth callout:    on (xkey-encrypted); every client is authorized per principal (docs/architecture.md §4)");
    io.out(`  bus URL:         ${url}`);
    io.out(`  admin identity:  ${home.adminIdentityFile}`);
    io.out(`  admin principal: ${boot.user.principal}`);
    io.out(`  health:          ${health.url}/readyz  (/livez /healthz /metrics; \`unibus status\`)`);
    io.out(`  services:        ${available.map((s) => s.name).join(", ") || "(none)"}${specs.length === 1 && specs[0]?.name === EMBEDDED_CHILD ? " (one process)" : ""}`);
    for (const s of missing) io.out(`  not available yet: ${s.name} (no ${s.entryPoint})`);
    io.out(`  connection file: ${home.envFile}`);
    io.out(`  panel bus URL:   ${wsUrl} (NATS WebSocket, loopback only)`);
    io.out(`  admin panel:     ${panelStatus(`${health.url}${PANEL_PATH}`)}`);
    io.out("");
    io.out("  Next: npx unibus micro ls    npx unibus users add <principal> --handle NAME");
    io.out("  Stop: Ctrl-C");
    io.out("");

    const reason = await waitForStop(server);
    if (reason === "server-exited") {
      say(io, "nats-server exited unexpectedly; stopping services");
      await supervisor.stop();
      throw new CliError(`nats-server stopped unexpectedly; see ${server.logPath}`);
    }
    say(io, `${reason}: stopping services`);
    await supervisor.stop();
    say(io, "stopping nats-server");
    await watchdog.stop();
    await server.stop();
    say(io, "stopped");
    return ExitCode.ok;
  } finally {
    // Reached on failures too: never leave children or a server behind a failed start.
    await supervisor?.stop();
    await watchdog?.stop();
    await server?.stop();
    await lock.release();
  }
}

/** A cluster record after a finished `unibus node adopt`. */
type AdoptedRecord = ClusterRecord & { readonly node_home: string; readonly adopted_at: string };

/** What nats-server writes to `<exe>_<pid>.ports` in its server dir. */
interface PortsFile {
  readonly nats?: readonly string[];
  readonly monitoring?: readonly string[];
}

function loopbackFirst(urls: readonly string[] | undefined): string | undefined {
  return urls?.find((u) => u.includes("://127.0.0.1:")) ?? urls?.[0];
}

/**
 * The client and monitoring URLs of the adopted node's running server, read
 * from the ports file its `unibus node start` server writes in the node
 * home (the client port is the operator's choice, so the record cannot hold
 * it). `UNIBUS_URL` overrides the client URL, and `UNIBUS_MONITOR_PORT` the
 * monitoring port. Fails when either is unknown: services pointed at a guess
 * could serve another bus.
 */
async function adoptedNodeUrls(io: CliIo, record: AdoptedRecord): Promise<{ url: string; monitorUrl: string }> {
  const serverDir = join(record.node_home, "server");
  let ports: PortsFile | undefined;
  let pid: number | undefined;
  try {
    pid = Number((await readFile(join(serverDir, NatsServerFile.pid), "utf8")).trim());
    const name = (await readdir(serverDir)).find((f) => f.endsWith(`_${pid}.ports`));
    // A ports file outlives a killed server: only a live pid's file says where the node listens.
    if (Number.isInteger(pid) && pid > 0 && name !== undefined && isProcessAlive(pid)) ports = JSON.parse(await readFile(join(serverDir, name), "utf8")) as PortsFile;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT" && !(err instanceof SyntaxError)) throw err;
  }
  const url = io.env[EnvVar.url] || loopbackFirst(ports?.nats);
  const monitorPort = io.env[EnvVar.monitorPort];
  const monitorUrl = monitorPort ? `http://${HOST}:${portFromEnv(io.env, EnvVar.monitorPort, DEFAULT_MONITOR_PORT)}` : loopbackFirst(ports?.monitoring);
  const start = `start the node first with unibus node start --home ${record.node_home} (with --monitor-port)`;
  if (url === undefined) throw new CliError(`node ${record.server_name}'s server is not running from ${record.node_home} (no live ports file in ${serverDir}): ${start}, or set ${EnvVar.url}`);
  if (monitorUrl === undefined) throw new CliError(`node ${record.server_name}'s server has no monitoring port known here (healthz reads it): ${start}, or set ${EnvVar.monitorPort}`);
  return { url, monitorUrl };
}

/**
 * `unibus up` on an adopted home: the node's nats-server runs from its node
 * home (`unibus node start`, on its derived key), so this runs only the
 * services beside it, with the home's existing identities, which the
 * cluster's authorization names. No server, no store key: the home's key
 * file was destroyed by the adoption and is never made again, since a key on
 * this disk is exactly what the adoption removed.
 */
async function runServicesOnly(
  io: CliIo,
  home: HomeLayout,
  record: AdoptedRecord,
  opts: { withTls: boolean; healthzPortSetting: number; lock: HomeLock },
): Promise<number> {
  // The node's server names its own client certificate, if any: a loopback CA made here would not be it.
  if (opts.withTls) throw new CliError(`--tls makes a certificate for a server this command starts; on adopted node ${record.server_name} it starts none: set ${EnvVar.url}=tls://… and ${EnvVar.tlsCa} instead`);
  const state = await provisionHome(home, ALL_SERVICES, { storeKey: false });
  const { url, monitorUrl } = await adoptedNodeUrls(io, record);
  const caFile = io.env[EnvVar.tlsCa] || undefined;
  if (url.startsWith("tls://") && caFile === undefined) throw new CliError(`${EnvVar.url} is ${url}: set ${EnvVar.tlsCa} to the CA its certificate is signed with`);
  const tls: ClientTls | undefined = url.startsWith("tls://") && caFile !== undefined ? { caFile } : undefined;
  say(io, `state dir ${home.root}`);
  say(io, `services only: cluster node ${record.server_name} of ${record.cluster_name} (R${record.replicas}) runs its own nats-server from ${record.node_home} (unibus node start)`);

  const healthzPort = opts.healthzPortSetting === 0 ? await freePort(HOST) : opts.healthzPortSetting;
  if (opts.healthzPortSetting !== 0) await assertPortFree(HOST, healthzPort, "healthz", EnvVar.healthzPort);
  const health: HealthzChild = { listen: `${HOST}:${healthzPort}`, url: `http://${HOST}:${healthzPort}`, monitorUrl };
  // Proves the node admits this home's service identities and its JetStream answers before any service starts.
  await checkBusReady(url, membershipIdentity(state), tls?.caFile);
  say(io, `using nats-server of ${record.server_name} at ${url} (monitoring ${monitorUrl}); no server or store key in ${home.root}`);

  await writePrivateFile(
    home.envFile,
    renderEnvFile({ [EnvVar.url]: url, [EnvVar.identity]: home.adminIdentityFile, [EnvVar.healthzUrl]: health.url, ...(tls === undefined ? {} : { [EnvVar.tlsCa]: tls.caFile }) }),
  );

  const availability = serviceAvailability();
  const available = availability.filter((s) => s.available);
  const serviceIo: CliIo = { ...io, env: { ...io.env, [JS_REPLICAS_ENV]: String(record.replicas) } };
  const specs = await serviceChildren(serviceIo, available, url, home, state, health, tls);
  const width = Math.max(10, ...ALL_SERVICES.map((n) => n.length));
  const supervisor = new Supervisor(
    specs,
    {
      line: (name, _stream, line) => io.out(formatChildLine(name === EMBEDDED_CHILD ? serviceOfLine(line, name) : name, line, width)),
      notice: (message) => say(io, message),
    },
    {
      // No watchdog: it stops the server it guards, and this server is the node's, not ours. The children watch their lifeline.
      onChildrenChanged: (pids) => void opts.lock.recordChildren(pids).catch((err: unknown) => say(io, `cannot record children in ${opts.lock.path}: ${String(err)}`)),
    },
  );
  try {
    supervisor.start();
    const boot = await ensureAdmin(io, home, state, url, tls);
    io.out("");
    io.out(`  mode:            services only (the server is node ${record.server_name}'s own: unibus node start --home ${record.node_home})`);
    io.out(`  bus URL:         ${url}`);
    io.out(`  admin identity:  ${home.adminIdentityFile}`);
    io.out(`  admin principal: ${boot.user.principal}`);
    io.out(`  health:          ${health.url}/readyz  (/livez /healthz /metrics; \`unibus status\`)`);
    io.out(`  services:        ${available.map((s) => s.name).join(", ") || "(none)"}${specs.length === 1 && specs[0]?.name === EMBEDDED_CHILD ? " (one process)" : ""}`);
    for (const s of availability.filter((a) => !a.available)) io.out(`  not available yet: ${s.name} (no ${s.entryPoint})`);
    io.out(`  connection file: ${home.envFile}`);
    io.out("");
    io.out("  Next: npx unibus micro ls");
    io.out("  Stop: Ctrl-C (stops the services; the node's server keeps running)");
    io.out("");
    const reason = await waitForStop(undefined);
    say(io, `${reason}: stopping services`);
    await supervisor.stop();
    say(io, "stopped");
    return ExitCode.ok;
  } finally {
    await supervisor.stop();
  }
}

/** Admin #0 through the bootstrap identity (idempotent), said on the console either way. */
async function ensureAdmin(io: CliIo, home: HomeLayout, state: ProvisionedServices, url: string, tls: { caFile: string } | undefined): Promise<Awaited<ReturnType<typeof bootstrapAdmin>>> {
  const bus = { server: url, source: home.root, ...(tls === undefined ? {} : { tlsCa: tls.caFile }) };
  const boot = await bootstrapAdmin({
    settings: { ...bus, identityPath: home.bootstrapIdentityFile },
    bootstrapIdentity: state.bootstrap,
    adminPrincipal: state.admin.principal,
    handle: DEFAULT_ADMIN_HANDLE,
    waitMs: BOOTSTRAP_WAIT_MS,
  });
  // What the banner promises: the admin identity logs in. The bootstrap
  // above went through a static server user, not the auth callout, which
  // may still be taking its login lease: a command run at once would be
  // refused. (An admin #0 other than this home's is not waited for.)
  if (boot.user.principal === state.admin.principal) {
    await waitForLogin({ ...bus, identityPath: home.adminIdentityFile }, state.admin, BOOTSTRAP_WAIT_MS);
  }
  say(io, boot.created ? `bootstrapped admin #0 ${boot.user.principal}` : `admin #0 exists: ${boot.user.principal}`);
  return boot;
}

async function findServerBinary(io: CliIo): Promise<string> {
  try {
    const found = await findNatsServer({ log: (msg) => say(io, msg) });
    say(io, `nats-server ${found.version} (${found.source}: ${found.bin})`);
    return found.bin;
  } catch (err) {
    if (err instanceof NatsServerNotFoundError) throw new CliError(err.message, { cause: err });
    throw err;
  }
}

async function stopOrphanServer(io: CliIo, home: HomeLayout): Promise<void> {
  try {
    const outcome = await stopOrphanNatsServer(home.serverDir, { log: (msg) => say(io, msg) });
    if (outcome.action === "stopped") say(io, `stopped the earlier nats-server (pid ${outcome.pid}, ${outcome.by})`);
  } catch (err) {
    if (err instanceof NatsServerOrphanError) throw new CliError(err.message, { cause: err });
    throw err;
  }
}

/** Without an armed watchdog a SIGKILL of `up` would leave the server (and busy services) running: refuse to go on. */
async function armWatchdog(server: NatsServerProcess): Promise<BusWatchdog> {
  try {
    return await startBusWatchdog(server);
  } catch (err) {
    if (err instanceof NatsServerOrphanError) throw new CliError(err.message, { cause: err });
    throw err;
  }
}

async function startServer(
  home: HomeLayout,
  state: ProvisionedHome,
  opts: {
    port: number;
    monitorPort: number;
    wsPort: number;
    bin: string;
    jetstreamLimits: AccountJetStreamLimits;
    syncInterval: string | undefined;
    tls: LoopbackTls | undefined;
    clusterRecord: ClusterRecord | undefined;
  },
): Promise<NatsServerProcess> {
  const single = buildServerConfig({
    host: HOST,
    port: opts.port,
    monitorPort: opts.monitorPort,
    websocketPort: opts.wsPort,
    jetstreamDir: home.jetstreamDir,
    syncInterval: opts.syncInterval,
    ...(opts.tls === undefined ? {} : { tls: { certFile: opts.tls.certFile, keyFile: opts.tls.keyFile } }),
    authorization: homeAuthorization(state, opts.jetstreamLimits),
  });
  const config = opts.clusterRecord === undefined ? single : clusteredBusConfig(single, opts.clusterRecord);
  try {
    return await startNatsServer({
      config,
      dir: home.serverDir,
      bin: opts.bin,
      name: "nats-server",
      // The key reaches the server only through its environment (architecture §1.4).
      env: { [JETSTREAM_KEY_ENV]: state.jetstreamKey },
    });
  } catch (err) {
    if (err instanceof NatsServerStartError) throw new CliError(`nats-server did not start: ${err.message}`, { cause: err });
    throw err;
  }
}

/**
 * Whether the admin panel's static bundle is built: it is served from
 * `libs/panel/dist`, which is a build output, not part of the checkout.
 */
function panelStatus(panelUrl: string): string {
  const dist = join(REPO_ROOT, "libs", "panel", "dist");
  if (!existsSync(join(dist, "index.html"))) return `not built: run \`npm run panel:build\`, then open ${panelUrl}`;
  return `${panelUrl}  (load admin.id in it; the key stays in the browser)`;
}

function membershipIdentity(state: ProvisionedServices): Identity {
  const id = state.services.get(ServiceName.membership);
  if (id === undefined) throw new CliError("no membership identity in the state dir");
  return id;
}

/**
 * Connects as the membership service (a config-level user: admins need the
 * callout, which is not running yet) and asks JetStream for account info:
 * proves the config admits services and JetStream (with its key) is up
 * before any service starts.
 */
async function checkBusReady(url: string, identity: Identity, caFile: string | undefined): Promise<number> {
  try {
    return await retry(
      async () => {
        const nc = await connect({
          servers: url,
          reconnect: false,
          name: "unibus-up",
          authenticator: nkeyAuthenticator(identity.signingKey),
          ...(caFile === undefined ? {} : { tls: { caFile } }),
        });
        try {
          const reply = await nc.request("$JS.API.INFO", undefined, { timeout: 2_000 });
          const info = reply.json<{ streams?: number; error?: { description?: string } }>();
          if (info.error) throw new Error(`JetStream: ${info.error.description ?? "error"}`);
          return info.streams ?? 0;
        } finally {
          await nc.close();
        }
      },
      { budgetMs: 15_000, delayMs: 250 },
    );
  } catch (err) {
    throw new CliError(`the bus did not become ready: ${(err as Error | undefined)?.message ?? "timeout"}`, { cause: err });
  }
}

/**
 * Refuses a bus whose server skipped streams on disk. With a wrong key
 * nats-server cannot decrypt a stream, logs it and starts without it: the
 * services would then recreate empty buckets beside the unreadable data.
 */
async function assertStoreOpened(home: HomeLayout, loaded: number): Promise<void> {
  const onDisk = await streamDirs(home.jetstreamDir);
  if (loaded < onDisk.length) {
    throw new CliError(
      `nats-server opened ${loaded} of the ${onDisk.length} streams in ${home.jetstreamDir}: ` +
        `${home.jetstreamKeyFile} is not the key this store was written with (or the store is damaged). ` +
        "The bus was not started; put back the right key file.",
    );
  }
}

/** Where the healthz child serves HTTP and reads the server's monitoring. */
interface HealthzChild {
  /** `127.0.0.1:<port>`: loopback only, like the rest of the embedded bus. */
  readonly listen: string;
  readonly url: string;
  readonly monitorUrl: string;
  /** The NATS WebSocket URL the admin panel (served by healthz at `/panel/`) offers as the bus; none when the server has no WebSocket port. */
  readonly wsUrl?: string;
}

/** The CA the services trust for a tls:// bus URL. */
type ClientTls = Pick<LoopbackTls, "caFile">;

/**
 * The environment every service process starts from: the user's, minus
 * anything meant for one service only or for nats-server only.
 */
function baseServiceEnv(parentEnv: Readonly<Record<string, string | undefined>>, tls: ClientTls | undefined): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...parentEnv };
  // Paths, not seeds: secrets never travel in env or argv to services.
  // Each service gets only its own: the system identity goes to membership alone.
  for (const key of [CALLOUT_ISSUER_SEED_FILE_ENV, CALLOUT_XKEY_SEED_FILE_ENV, SYS_IDENTITY_ENV, BOOTSTRAP_PRINCIPAL_ENV, EMBEDDED_SERVICES_ENV, SERVICE_PROCESSES_ENV, ...Object.values(HealthzEnv)]) delete env[key];
  // Defence in depth: the JetStream key is for nats-server only, even if the user exported it.
  delete env[JETSTREAM_KEY_ENV];
  if (tls !== undefined) {
    // Node adds this CA to its trust store at start: every service's nats.js
    // connection verifies the loopback certificate with no TLS code of its own.
    env["NODE_EXTRA_CA_CERTS"] = tls.caFile;
    env[EnvVar.tlsCa] = tls.caFile;
  }
  return env;
}

/** The variables one service gets on top of {@link baseServiceEnv}: where the bus is, and paths to its own keys. */
function serviceEnv(name: string, url: string, home: HomeLayout, state: ProvisionedServices, health: HealthzChild): Record<string, string> {
  const env: Record<string, string> = { [EnvVar.url]: url, [EnvVar.identity]: serviceIdentityFile(home, name) };
  if (name === ServiceName.authCallout) {
    env[CALLOUT_ISSUER_SEED_FILE_ENV] = home.calloutIssuerSeedFile;
    env[CALLOUT_XKEY_SEED_FILE_ENV] = home.calloutXkeySeedFile;
  }
  if (name === ServiceName.healthz) {
    env[HealthzEnv.listen] = health.listen;
    env[HealthzEnv.monitorUrls] = health.monitorUrl;
    if (health.wsUrl !== undefined) env[HealthzEnv.wsUrl] = health.wsUrl;
    env[HealthzEnv.cipher] = JETSTREAM_CIPHER;
  }
  if (name === ServiceName.membership) {
    env[SYS_IDENTITY_ENV] = home.systemIdentityFile;
    env[BOOTSTRAP_PRINCIPAL_ENV] = state.bootstrap.principal;
  }
  return env;
}

function serviceSpec(
  name: string,
  entryPoint: string,
  url: string,
  home: HomeLayout,
  state: ProvisionedServices,
  parentEnv: Readonly<Record<string, string | undefined>>,
  health: HealthzChild,
  tls: ClientTls | undefined,
): ChildSpec {
  return {
    name,
    command: process.execPath,
    // `--import tsx` resolves from cwd, hence cwd = repo root. The lifeline
    // preload comes first so the child watches its supervisor while tsx loads.
    args: ["--import", PARENT_LIFELINE_PRELOAD, "--import", "tsx", entryPoint],
    env: { ...baseServiceEnv(parentEnv, tls), ...serviceEnv(name, url, home, state, health) },
    cwd: REPO_ROOT,
  };
}

/**
 * The supervised processes that run the services. By default one Node
 * process runs them all (each still on its own connection, with its own
 * identity and environment): one runtime instead of six, and plain
 * JavaScript bundled on demand instead of a TypeScript loader, which is what
 * keeps the laptop default lean. If one service fails, that process exits and
 * the supervisor restarts it with every service in it. `UNIBUS_SERVICE_PROCESSES=each`
 * keeps one process per service.
 */
async function serviceChildren(
  io: CliIo,
  available: readonly ServiceAvailability[],
  url: string,
  home: HomeLayout,
  state: ProvisionedServices,
  health: HealthzChild,
  tls: ClientTls | undefined,
): Promise<ChildSpec[]> {
  const mode = io.env[SERVICE_PROCESSES_ENV] || ServiceProcesses.One;
  if (mode !== ServiceProcesses.One && mode !== ServiceProcesses.Each) {
    throw new CliError(`${SERVICE_PROCESSES_ENV} must be ${ServiceProcesses.One} or ${ServiceProcesses.Each}, got ${JSON.stringify(mode)}`);
  }
  if (mode === ServiceProcesses.Each || available.length === 0) return available.map((s) => serviceSpec(s.name, s.entryPoint, url, home, state, io.env, health, tls));
  const members = Object.fromEntries(available.map((s) => [s.name, serviceEnv(s.name, url, home, state, health)]));
  const env = { ...baseServiceEnv(io.env, tls), [EMBEDDED_SERVICES_ENV]: JSON.stringify(members) };
  const runDir = join(home.root, "run");
  await ensurePrivateDir(runDir);
  let args: string[];
  try {
    const bundle = await embeddedBundle(embeddedEntryPoint(), runDir, REPO_ROOT);
    if (bundle.built) say(io, `bundled the services to ${bundle.path} in ${bundle.ms} ms`);
    args = ["--import", PARENT_LIFELINE_PRELOAD, bundle.path];
  } catch (err) {
    // Still one process, only heavier: a failed bundle must not stop the bus from starting.
    say(io, `cannot bundle the services (${err instanceof Error ? err.message.split("\n")[0] : String(err)}); running them through the TypeScript loader`);
    args = ["--import", PARENT_LIFELINE_PRELOAD, "--import", "tsx", embeddedEntryPoint()];
  }
  return [{ name: EMBEDDED_CHILD, command: process.execPath, args, env, cwd: REPO_ROOT }];
}

type StopReason = "SIGINT" | "SIGTERM" | "server-exited";

/** Waits for Ctrl-C, SIGTERM, or the exit of `server` when this process started one. */
function waitForStop(server: NatsServerProcess | undefined): Promise<StopReason> {
  return new Promise((resolve) => {
    const onSignal = (signal: "SIGINT" | "SIGTERM") => () => {
      cleanup();
      // A second Ctrl-C while stopping should not kill `up` with children still running.
      process.on("SIGINT", ignore);
      process.on("SIGTERM", ignore);
      resolve(signal);
    };
    const onInt = onSignal("SIGINT");
    const onTerm = onSignal("SIGTERM");
    const cleanup = (): void => {
      process.off("SIGINT", onInt);
      process.off("SIGTERM", onTerm);
    };
    process.on("SIGINT", onInt);
    process.on("SIGTERM", onTerm);
    void server?.exited.then(() => {
      cleanup();
      resolve("server-exited");
    });
  });
}

function ignore(): void {
  // Intentionally empty: keep the default (exit) from running mid-shutdown.
}
