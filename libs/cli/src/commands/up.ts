import { connect } from "@nats-io/transport-node";
import { nkeyAuthenticator, publicIdentity } from "@unibus/crypto";
import { NatsServerNotFoundError, NatsServerStartError, findNatsServer, startNatsServer } from "@unibus/natsd";
import type { NatsServerProcess } from "@unibus/natsd";
import { parseCommandArgs } from "../args.js";
import type { Command } from "../command.js";
import { CliError, ExitCode } from "../errors.js";
import { EnvVar, ensurePrivateDir, renderEnvFile, resolveHome, serviceIdentityFile, writePrivateFile } from "../home.js";
import type { HomeLayout } from "../home.js";
import type { CliIo } from "../io.js";
import { formatChildLine } from "../up/child-log.js";
import { acquireHomeLock } from "../up/lock.js";
import { assertPortFree, portFromEnv } from "../up/ports.js";
import { provisionHome } from "../up/provision.js";
import type { ProvisionedHome } from "../up/provision.js";
import { JETSTREAM_KEY_ENV, buildServerConfig, nkeyUsersAuthorization } from "../up/server-config.js";
import { ALL_SERVICES, REPO_ROOT, ServiceName, serviceAvailability } from "../up/services.js";
import { Supervisor } from "../up/supervisor.js";
import type { ChildSpec } from "../up/supervisor.js";

const DEFAULT_PORT = 4222;
/** Read by services/auth-callout/src/main.ts (`CalloutEnv.issuerSeedFile`). */
const CALLOUT_ISSUER_SEED_FILE_ENV = "UNIBUS_CALLOUT_ISSUER_SEED_FILE";
const DEFAULT_MONITOR_PORT = 8222;
/** The embedded default listens on loopback only: a laptop bus is not a network service. */
const HOST = "127.0.0.1";

const upHelp = `Usage: unibus up

Runs the whole bus on this machine (what \`npm start\` runs): a local
nats-server with JetStream encrypted at rest, and every service as a
supervised child process. Ctrl-C stops everything.

On the first run it creates, in the state dir (mode 0700, files 0600):
  data/                 JetStream store
  secrets/jetstream.key at-rest encryption key (back it up: without it the data is unreadable)
  identities/<svc>.id   one identity per service
  admin.id              admin #0
  env                   UNIBUS_URL and UNIBUS_IDENTITY for other unibus commands
Later runs reuse all of it; no key is ever regenerated.

Environment:
  UNIBUS_HOME           state dir (default: ./.unibus)
  UNIBUS_PORT           client port (default ${DEFAULT_PORT})
  UNIBUS_MONITOR_PORT   monitoring port on 127.0.0.1 (default ${DEFAULT_MONITOR_PORT})
  UNIBUS_LOG_LEVEL      services' log level
  NATS_SERVER_BIN       nats-server to use (>= 2.10; found or fetched otherwise)

Options:
  -h, --help            show this help`;

/**
 * The loud banner: until the auth-callout service is wired into the server
 * config, access is a static nkey list and no per-subject ACL applies.
 */
const CALLOUT_WARNING = [
  "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
  "!! WARNING: auth callout is NOT enabled yet.                              !!",
  "!! Only the admin and service identities below can connect (static nkey  !!",
  "!! users), and each of them may publish/subscribe to ANY subject.         !!",
  "!! Per-principal permissions (DESIGN §4) are not enforced.                !!",
  "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
].join("\n");

/** `unibus up`. */
export const upCommand: Command = {
  name: "up",
  summary: "run the bus locally: nats-server + every service (what `npm start` runs)",
  help: upHelp,
  async run(args, io) {
    const { flags } = parseCommandArgs(args, {}, { command: "up", maxPositionals: 0 });
    if (flags.help) {
      io.out(upHelp);
      return ExitCode.ok;
    }
    return runUp(io);
  },
};

function say(io: CliIo, line: string): void {
  io.out(`[unibus up] ${line}`);
}

async function runUp(io: CliIo): Promise<number> {
  const home = resolveHome(io.env, io.cwd);
  const port = portFromEnv(io.env, EnvVar.port, DEFAULT_PORT);
  const monitorPort = portFromEnv(io.env, EnvVar.monitorPort, DEFAULT_MONITOR_PORT);

  await ensurePrivateDir(home.root);
  const lock = await acquireHomeLock(home.lockFile);
  let server: NatsServerProcess | undefined;
  let supervisor: Supervisor | undefined;
  try {
    const state = await provisionHome(home, ALL_SERVICES);
    say(io, `state dir ${home.root}`);
    for (const line of state.created) say(io, `created ${line}`);

    await assertPortFree(HOST, port, "client", EnvVar.port);
    await assertPortFree(HOST, monitorPort, "monitoring", EnvVar.monitorPort);

    const bin = await findServerBinary(io);
    server = await startServer(home, state, { port, monitorPort, bin });
    const url = server.url;
    await checkBusReady(url, state);
    say(io, `nats-server pid ${server.pid} ready at ${url} (JetStream encrypted at rest, monitoring http://127.0.0.1:${monitorPort})`);

    await writePrivateFile(home.envFile, renderEnvFile({ [EnvVar.url]: url, [EnvVar.identity]: home.adminIdentityFile }));

    const availability = serviceAvailability();
    const missing = availability.filter((s) => !s.available);
    const specs = availability.filter((s) => s.available).map((s): ChildSpec => serviceSpec(s.name, s.entryPoint, url, home, io.env));
    const width = Math.max(10, ...ALL_SERVICES.map((n) => n.length));
    supervisor = new Supervisor(specs, {
      line: (name, _stream, line) => io.out(formatChildLine(name, line, width)),
      notice: (message) => say(io, message),
    });
    supervisor.start();

    io.out("");
    io.out(CALLOUT_WARNING);
    io.out("");
    io.out(`  bus URL:         ${url}`);
    io.out(`  admin identity:  ${home.adminIdentityFile}`);
    io.out(`  admin principal: ${publicIdentity(state.admin).principal}`);
    io.out(`  services:        ${specs.map((s) => s.name).join(", ") || "(none)"}`);
    for (const s of missing) io.out(`  not available yet: ${s.name} (no ${s.entryPoint})`);
    io.out(`  connection file: ${home.envFile}`);
    io.out("");
    io.out("  Next: npx unibus micro ls");
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
    await server.stop();
    say(io, "stopped");
    return ExitCode.ok;
  } finally {
    // Reached on failures too: never leave children or a server behind a failed start.
    await supervisor?.stop();
    await server?.stop();
    await lock.release();
  }
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

async function startServer(
  home: HomeLayout,
  state: ProvisionedHome,
  opts: { port: number; monitorPort: number; bin: string },
): Promise<NatsServerProcess> {
  const principals = [state.admin.principal, ...[...state.services.values()].map((id) => id.principal)];
  const config = buildServerConfig({
    host: HOST,
    port: opts.port,
    monitorPort: opts.monitorPort,
    jetstreamDir: home.jetstreamDir,
    authorization: nkeyUsersAuthorization(principals),
  });
  try {
    return await startNatsServer({
      config,
      dir: home.serverDir,
      bin: opts.bin,
      name: "nats-server",
      // The key reaches the server only through its environment (DESIGN §1.4).
      env: { [JETSTREAM_KEY_ENV]: state.jetstreamKey },
    });
  } catch (err) {
    if (err instanceof NatsServerStartError) throw new CliError(`nats-server did not start: ${err.message}`, { cause: err });
    throw err;
  }
}

/**
 * Connects as admin and asks JetStream for account info: proves that the
 * nkey users config admits the admin and that JetStream (with its key) is up
 * before any service starts.
 */
async function checkBusReady(url: string, state: ProvisionedHome): Promise<void> {
  const deadline = Date.now() + 15_000;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const nc = await connect({ servers: url, reconnect: false, name: "unibus-up", authenticator: nkeyAuthenticator(state.admin.signingKey) });
      try {
        const reply = await nc.request("$JS.API.INFO", undefined, { timeout: 2_000 });
        const info = reply.json<{ error?: { description?: string } }>();
        if (info.error) throw new Error(`JetStream: ${info.error.description ?? "error"}`);
        return;
      } finally {
        await nc.close();
      }
    } catch (err) {
      lastError = err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw new CliError(`the bus did not become ready: ${(lastError as Error | undefined)?.message ?? "timeout"}`, { cause: lastError });
}

function serviceSpec(
  name: string,
  entryPoint: string,
  url: string,
  home: HomeLayout,
  parentEnv: Readonly<Record<string, string | undefined>>,
): ChildSpec {
  const env: Record<string, string | undefined> = { ...parentEnv, [EnvVar.url]: url, [EnvVar.identity]: serviceIdentityFile(home, name) };
  // A path, not the seed: secrets never travel in env or argv to services.
  if (name === ServiceName.authCallout) env[CALLOUT_ISSUER_SEED_FILE_ENV] = home.calloutIssuerSeedFile;
  // Defence in depth: the JetStream key is for nats-server only, even if the user exported it.
  delete env[JETSTREAM_KEY_ENV];
  return {
    name,
    command: process.execPath,
    // `--import tsx` resolves from cwd, hence cwd = repo root.
    args: ["--import", "tsx", entryPoint],
    env,
    cwd: REPO_ROOT,
  };
}

type StopReason = "SIGINT" | "SIGTERM" | "server-exited";

function waitForStop(server: NatsServerProcess): Promise<StopReason> {
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
    void server.exited.then(() => {
      cleanup();
      resolve("server-exited");
    });
  });
}

function ignore(): void {
  // Intentionally empty: keep the default (exit) from running mid-shutdown.
}
