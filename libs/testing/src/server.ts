import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findNatsServer, mergeNatsConfig, startNatsServer } from "@unibus/natsd";
import type { NatsConfig, NatsServerProcess } from "@unibus/natsd";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection, NodeConnectionOptions } from "@nats-io/transport-node";
import { trackLeftover } from "./cleanup.js";

/** Options of {@link startTestServer}. */
export interface TestServerOptions {
  /** Enable JetStream with its store in the server's temp dir. Default true. */
  jetstream?: boolean;
  /** Config merged over the defaults (loopback host, free port, monitoring, JetStream). */
  config?: NatsConfig;
  /** Extra environment for the server, e.g. values of `envRef` secrets. */
  env?: Record<string, string>;
}

/** A nats-server started for a test, owning its temp dir and the connections made through it. */
export interface TestServer extends NatsServerProcess {
  /** Connects to this server (options override `servers`); the connection is closed by `stop()`. */
  connect(opts?: NodeConnectionOptions): Promise<NatsConnection>;
  /** Closes tracked connections, stops the server and removes its temp dir. Idempotent. */
  stop(): Promise<void>;
  /** Stops the process but keeps its dir, data and ports, for chaos tests; see {@link TestServer.resume}. */
  halt(): Promise<void>;
  /** Starts a halted server again on the same ports with the same data. */
  resume(): Promise<void>;
  /** `halt()` then `resume()`; returns this same handle. Tracked connections reconnect by themselves. */
  restart(): Promise<TestServer>;
  /** False between `halt()` and `resume()` and after `stop()`. */
  readonly running: boolean;
}

/** Internal: how a test server is built, shared with the cluster helper. */
export interface TestServerSpec {
  name: string;
  dir: string;
  /** Removed by `stop()` when this server created it. */
  ownsDir: boolean;
  config: NatsConfig;
  env?: Record<string, string>;
}

/** Defaults every test server starts from: loopback only, free ports, monitoring on. */
export function testServerDefaults(dir: string, jetstream: boolean): NatsConfig {
  return {
    host: "127.0.0.1",
    port: -1,
    http_port: -1,
    ...(jetstream ? { jetstream: { store_dir: join(dir, "jetstream") } } : {}),
  };
}

/** What a {@link TestServer} reports of its process: after `resume()` these are the new process's. */
const PROCESS_FIELDS = ["url", "port", "clusterPort", "monitorPort", "pid", "dir", "configPath", "logPath", "exited"] as const;
type ProcessField = (typeof PROCESS_FIELDS)[number];

/** `target` with each of `keys` added as a getter that reads that field of `source()` at the time of the read. */
function readThrough<S, K extends keyof S, T extends object>(source: () => S, keys: readonly K[], target: T): T & Pick<S, K> {
  for (const key of keys) Object.defineProperty(target, key, { get: () => source()[key], enumerable: true, configurable: true });
  return target as T & Pick<S, K>;
}

/** Builds a {@link TestServer} around a freshly started process. */
export async function launchTestServer(spec: TestServerSpec): Promise<TestServer> {
  const bin = (await findNatsServer({ log: (m) => process.stderr.write(`@unibus/testing: ${m}\n`) })).bin;
  const start = (config: NatsConfig): Promise<NatsServerProcess> =>
    startNatsServer({ config, dir: spec.dir, env: spec.env, bin, name: spec.name });

  let proc: NatsServerProcess | undefined;
  try {
    proc = await start(spec.config);
  } catch (err) {
    if (spec.ownsDir) await rm(spec.dir, { recursive: true, force: true });
    throw err;
  }
  let current: NatsServerProcess = proc;
  let running = true;
  let stopped = false;
  const connections = new Set<NatsConnection>();
  const untrack = trackLeftover({ kill: () => current.kill("SIGKILL"), dir: spec.ownsDir ? spec.dir : undefined });

  // Resume on the same ports so clients (and cluster routes) find the node again.
  const pinned: NatsConfig = mergeNatsConfig(spec.config, {
    port: current.port,
    ...(current.monitorPort ? { http_port: current.monitorPort } : {}),
  });

  const handle: Omit<TestServer, ProcessField> = {
    get running() {
      return running;
    },
    kill(signal) {
      current.kill(signal);
    },
    async connect(opts) {
      const nc = await connect({ servers: current.url, name: spec.name, ...opts });
      connections.add(nc);
      void nc.closed().then(() => connections.delete(nc));
      return nc;
    },
    async halt() {
      running = false;
      await current.stop();
    },
    async resume() {
      if (stopped) throw new Error(`${spec.name} was stopped; start a new test server instead`);
      if (running) return;
      current = await start(pinned);
      running = true;
    },
    async restart() {
      await server.halt();
      await server.resume();
      return server;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      running = false;
      await Promise.all([...connections].map((nc) => nc.close().catch(() => undefined)));
      connections.clear();
      await current.stop();
      if (spec.ownsDir) await rm(spec.dir, { recursive: true, force: true });
      untrack();
    },
  };
  const server: TestServer = readThrough(() => current, PROCESS_FIELDS, handle);
  return server;
}

/**
 * Starts a real nats-server for a test on a free loopback port, with
 * JetStream (store in a temp dir) unless `jetstream: false`. `config` is
 * deep-merged over the defaults, so accounts, authorization (auth callout)
 * and `jetstream.key: envRef(...)` blocks pass through; their secrets go in
 * `env`. Call `stop()` in `afterAll`/`afterEach`; servers left running are
 * killed and their dirs removed when the test process exits.
 */
export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const dir = await mkdtemp(join(tmpdir(), "unibus-nats-"));
  const config = mergeNatsConfig(testServerDefaults(dir, opts.jetstream ?? true), opts.config);
  return launchTestServer({ name: "test-nats", dir, ownsDir: true, config, env: opts.env });
}
