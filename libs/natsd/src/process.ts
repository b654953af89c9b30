import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { chmod, mkdir, open, readFile, rm } from "node:fs/promises";
import { connect as tcpConnect } from "node:net";
import { basename, join, resolve } from "node:path";
import { renderNatsConfig } from "./config.js";
import type { NatsConfig } from "./config.js";
import { NatsServerStartError } from "./errors.js";
import { findNatsServer } from "./provision.js";

/** Options of {@link startNatsServer}. */
export interface StartNatsServerOptions {
  /** Server config. `port` defaults to -1 (a free port); ports file, pid file and log go to `dir`. */
  config: NatsConfig;
  /** Working dir for the config, log, pid and ports files (mode 0700; the files 0600). */
  dir: string;
  /** Extra environment for the server, e.g. secrets referenced by `envRef`. Never written to disk or argv. */
  env?: Record<string, string>;
  /** nats-server executable. Default: {@link findNatsServer}. */
  bin?: string;
  /** Label used in error messages. */
  name?: string;
  /** How long to wait for the server to accept connections. Default 15 s. */
  readyTimeoutMs?: number;
  /** How long {@link NatsServerProcess.stop} waits after SIGTERM before SIGKILL. Default 10 s. */
  stopGraceMs?: number;
}

/** A running nats-server child process. */
export interface NatsServerProcess {
  /** Client URL on loopback, e.g. `nats://127.0.0.1:4222`. */
  readonly url: string;
  /** Client port. */
  readonly port: number;
  /** Route (cluster) port, when the config has a `cluster` block. */
  readonly clusterPort?: number;
  /** HTTP monitoring port, when monitoring is enabled. */
  readonly monitorPort?: number;
  /** OS process id. */
  readonly pid: number;
  /** Working dir (config, log, pid and ports files; store dirs if placed there). */
  readonly dir: string;
  /** Path of the rendered config file (mode 0600). */
  readonly configPath: string;
  /** Path of the server log file. */
  readonly logPath: string;
  /** Resolves with the exit code (null when killed by a signal) once the process has exited. */
  readonly exited: Promise<number | null>;
  /** SIGTERM, wait for exit, SIGKILL after the grace period. Idempotent. */
  stop(): Promise<void>;
  /** Sends a signal (default SIGKILL) without waiting. */
  kill(signal?: NodeJS.Signals): void;
  /** Stops this process and starts a new one with the same dir, config and env (new port unless the config fixes one). */
  restart(): Promise<NatsServerProcess>;
}

/** Ports nats-server writes to `<ports_file_dir>/<exe>_<pid>.ports`. */
interface PortsFile {
  nats?: string[];
  cluster?: string[];
  monitoring?: string[];
}

const LOG_TAIL_LINES = 30;
/** Children still running; killed when this process exits so no server outlives its owner. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of live) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function portOf(url: string | undefined): number | undefined {
  if (!url) return undefined;
  const m = /:(\d+)\/?$/.exec(url);
  return m ? Number(m[1]) : undefined;
}

/** Prefer the IPv4 loopback address, which every listener bound to 0.0.0.0 or 127.0.0.1 answers on. */
function pickUrl(urls: string[] | undefined): string | undefined {
  if (!urls || urls.length === 0) return undefined;
  return urls.find((u) => u.includes("://127.0.0.1:")) ?? urls[0];
}

function probeTcp(host: string, port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = tcpConnect({ host, port });
    socket.setTimeout(1000);
    socket.once("connect", () => {
      socket.destroy();
      done(true);
    });
    socket.once("error", () => done(false));
    socket.once("timeout", () => {
      socket.destroy();
      done(false);
    });
  });
}

async function tail(path: string): Promise<string> {
  try {
    return (await readFile(path, "utf8")).trimEnd().split("\n").slice(-LOG_TAIL_LINES).join("\n");
  } catch {
    return "";
  }
}

/**
 * Writes `<dir>/nats-server.conf` (0600) and starts nats-server on it, then
 * waits until the ports file appears and the client port accepts TCP.
 * Secrets belong in `opts.env`, referenced from the config with `envRef`:
 * argv carries only `-c <config>`.
 *
 * @throws NatsServerStartError with the log tail when the server exits early or is not ready in time.
 */
export async function startNatsServer(opts: StartNatsServerOptions): Promise<NatsServerProcess> {
  const dir = resolve(opts.dir);
  const name = opts.name ?? "nats-server";
  const bin = opts.bin ?? (await findNatsServer()).bin;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
  const stopGraceMs = opts.stopGraceMs ?? 10_000;
  const configPath = join(dir, "nats-server.conf");
  const logPath = join(dir, "nats-server.log");
  const pidPath = join(dir, "nats-server.pid");

  await mkdir(dir, { recursive: true, mode: 0o700 });
  // mkdir's mode applies only to a new dir; the log names every connecting
  // client and account, so the dir stays owner-only whoever created it.
  await chmod(dir, 0o700);
  const rendered = renderNatsConfig({
    port: -1,
    ...opts.config,
    ports_file_dir: dir,
    pid_file: pidPath,
    log_file: logPath,
  });
  // open+chmod: writeFile's mode applies only when the file is created, and a
  // restart rewrites an existing file.
  const fh = await open(configPath, "w", 0o600);
  try {
    await fh.chmod(0o600);
    await fh.writeFile(rendered);
  } finally {
    await fh.close();
  }

  // nats-server creates its log 0640 but keeps the mode of a file that
  // exists: create it 0600 first (and tighten one left by an older run), so
  // the log's client and account names are readable by the owner only.
  const log = await open(logPath, "a", 0o600);
  try {
    await log.chmod(0o600);
  } finally {
    await log.close();
  }

  // Own process group: a Ctrl-C at the terminal must reach only the
  // supervisor, which stops the services (they drain) before the server.
  const child = spawn(bin, ["-c", configPath], {
    cwd: dir,
    detached: true,
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  installExitHook();
  live.add(child);

  // Config errors are printed to stderr before the log file is opened.
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-16_384);
  });
  let exitedNow = false;
  let spawnError: Error | undefined;
  const exited = new Promise<number | null>((done) => {
    child.once("error", (err) => {
      spawnError = err;
      exitedNow = true;
      live.delete(child);
      done(null);
    });
    child.once("exit", (code) => {
      exitedNow = true;
      live.delete(child);
      done(code);
    });
  });
  const logTail = async (): Promise<string> =>
    [stderr.trimEnd().split("\n").slice(-LOG_TAIL_LINES).join("\n"), await tail(logPath)].filter(Boolean).join("\n");

  const fail = async (message: string, cause?: unknown): Promise<never> => {
    if (!exitedNow) {
      child.kill("SIGKILL");
      await exited;
    }
    throw new NatsServerStartError(`${name}: ${message} (config ${configPath})`, await logTail(), { cause });
  };

  const deadline = Date.now() + readyTimeoutMs;
  const portsPath = join(dir, `${basename(bin)}_${child.pid ?? "none"}.ports`);
  let ports: PortsFile | undefined;
  let url: string | undefined;
  for (;;) {
    if (exitedNow) {
      const code = await exited;
      return fail(spawnError ? `could not run ${bin}: ${spawnError.message}` : `exited during startup with code ${code}`, spawnError);
    }
    if (Date.now() > deadline) return fail(`not ready within ${readyTimeoutMs} ms`);
    if (!url) {
      try {
        ports = JSON.parse(await readFile(portsPath, "utf8")) as PortsFile;
        url = pickUrl(ports.nats);
        // The server writes it 0644 (under umask 022); the dir is 0700, so it
        // was never reachable by others, and it keeps the files-0600 promise.
        await chmod(portsPath, 0o600);
      } catch {
        // Not written yet, or caught mid-write.
      }
    }
    if (url) {
      const host = new URL(url).hostname.replace(/^\[|\]$/g, "");
      const port = portOf(url);
      if (port !== undefined && (await probeTcp(host, port))) break;
    }
    await sleep(25);
  }

  const port = portOf(url) ?? 0;
  const server: NatsServerProcess = {
    url: url.replace(/\/$/, ""),
    port,
    clusterPort: portOf(pickUrl(ports?.cluster)),
    monitorPort: portOf(pickUrl(ports?.monitoring)),
    pid: child.pid ?? 0,
    dir,
    configPath,
    logPath,
    exited,
    kill(signal: NodeJS.Signals = "SIGKILL") {
      if (!exitedNow) child.kill(signal);
    },
    async stop() {
      if (exitedNow) {
        await exited;
        return;
      }
      child.kill("SIGTERM");
      const timer = setTimeout(() => {
        if (!exitedNow) child.kill("SIGKILL");
      }, stopGraceMs);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
      // A killed server leaves its ports file; the next start polls its own pid's file anyway.
      await rm(portsPath, { force: true });
    },
    async restart() {
      await server.stop();
      return startNatsServer({ ...opts, bin });
    },
  };
  return server;
}
