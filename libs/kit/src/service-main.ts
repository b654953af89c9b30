import { connect } from "@nats-io/transport-node";
import type { ConnectionOptions, NatsConnection } from "@nats-io/transport-node";
import { loadIdentityFile, nkeyAuthenticator } from "@unibus/crypto";
import { pino } from "pino";
import type { Logger } from "pino";
import type { KitDeps, RunningService } from "./start-service.js";

/** Log levels pino accepts. */
export const LogLevel = {
  Fatal: "fatal",
  Error: "error",
  Warn: "warn",
  Info: "info",
  Debug: "debug",
  Trace: "trace",
  Silent: "silent",
} as const;
/** One of the {@link LogLevel} values. */
export type LogLevel = (typeof LogLevel)[keyof typeof LogLevel];

/** A service process's configuration, read once from the environment. */
export interface ServiceConfig {
  /** NATS server URL(s), comma separated in `UNIBUS_URL`. */
  readonly servers: readonly string[];
  /** Path of the service's identity file (`UNIBUS_IDENTITY`); unset = connect without nkey auth. */
  readonly identityPath?: string;
  readonly logLevel: LogLevel;
  /** Replicas for buckets the service creates (`UNIBUS_JS_REPLICAS`, 1 or 3). */
  readonly bucketReplicas: number;
  /** Budget for JetStream set-up at start (`UNIBUS_JS_SETUP_BUDGET_MS`). */
  readonly bucketBudgetMs: number;
}

/** The environment is not a valid service configuration. */
export class ServiceConfigError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ServiceConfigError";
  }
}

function positiveInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^[1-9][0-9]*$/.test(raw)) throw new ServiceConfigError(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return Number(raw);
}

/**
 * Reads a service's configuration from the environment:
 * `UNIBUS_URL` (default nats://127.0.0.1:4222), `UNIBUS_IDENTITY`,
 * `UNIBUS_LOG_LEVEL` (default info), `UNIBUS_JS_REPLICAS` (default 1),
 * `UNIBUS_JS_SETUP_BUDGET_MS` (default 60000).
 *
 * @throws ServiceConfigError naming the offending variable.
 */
export function loadServiceConfig(env: NodeJS.ProcessEnv): ServiceConfig {
  const servers = (env["UNIBUS_URL"] || "nats://127.0.0.1:4222").split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (servers.length === 0) throw new ServiceConfigError("UNIBUS_URL names no server");
  const level = env["UNIBUS_LOG_LEVEL"] || LogLevel.Info;
  if (!(Object.values(LogLevel) as string[]).includes(level)) {
    throw new ServiceConfigError(`UNIBUS_LOG_LEVEL must be one of ${Object.values(LogLevel).join(", ")}, got ${JSON.stringify(level)}`);
  }
  const identityPath = env["UNIBUS_IDENTITY"] || undefined;
  const base = {
    servers,
    logLevel: level as LogLevel,
    bucketReplicas: positiveInt(env, "UNIBUS_JS_REPLICAS", 1),
    bucketBudgetMs: positiveInt(env, "UNIBUS_JS_SETUP_BUDGET_MS", 60_000),
  };
  return identityPath === undefined ? base : { ...base, identityPath };
}

/** How long a SIGTERM/SIGINT drain may take before the connection is closed outright. */
export const SHUTDOWN_GRACE_MS = 10_000;

/** How a service main creates its service; `createXService` fits. */
export type CreateService = (nc: NatsConnection, deps: KitDeps) => Promise<RunningService>;

/** What {@link runServiceMain} runs. */
export interface ServiceMainSpec {
  /** Service name: the connection name and the log's `svc`. */
  readonly name: string;
  readonly create: CreateService;
}

/** A service that {@link ServiceEntry.start} connected and started. */
export interface StartedService {
  /** Settles when the service's connection has closed; before a stop, that is a failure. */
  readonly closed: Promise<unknown>;
  /** Stops taking requests, waits for in-flight ones and drains the connection. */
  stop(): Promise<void>;
}

/**
 * How to run one service in a process: everything its `main.ts` used to do
 * between reading the environment and serving. A process runs one entry (a
 * service's own `main.ts`) or several ({@link runServiceProcess}), each on its
 * own connection with its own identity, so they stay separate services on
 * the bus that talk to each other only over NATS.
 */
export interface ServiceEntry {
  readonly name: string;
  /** Reads `env` (this service's environment, not the process's), connects and starts serving. */
  start(env: NodeJS.ProcessEnv, logger: Logger): Promise<StartedService>;
}

/** How a service's connection differs from the kit's default (see {@link kitServiceEntry}). */
export interface KitConnectionOptions {
  /**
   * Take replies under `_INBOX.<principal>` instead of `_INBOX.`: for a
   * service user whose server permissions let it subscribe to its own inbox
   * only (the auth callout). Needs an identity.
   */
  readonly ownInbox?: boolean;
  /** Milliseconds between reconnect attempts and their jitter; default nats.js's. */
  readonly reconnectTimeWaitMs?: number;
  readonly reconnectJitterMs?: number;
}

/** The nats.js options a service main connects with (exported for its tests). */
export async function connectOptions(config: ServiceConfig, name: string, extra: KitConnectionOptions = {}): Promise<ConnectionOptions> {
  const options: ConnectionOptions = {
    servers: [...config.servers],
    name,
    // A service outlives NATS restarts and starts before NATS in compose.
    maxReconnectAttempts: -1,
    waitOnFirstConnect: true,
    ...(extra.reconnectTimeWaitMs === undefined ? {} : { reconnectTimeWait: extra.reconnectTimeWaitMs }),
    ...(extra.reconnectJitterMs === undefined ? {} : { reconnectJitter: extra.reconnectJitterMs }),
  };
  // A tls:// seed means TLS or nothing: without this nats.js would talk plaintext to a
  // "node" that offers no TLS (a relay in the middle). The CA comes from NODE_EXTRA_CA_CERTS.
  if (config.servers.some((u) => /^tls:\/\//i.test(u))) options.tls = {};
  if (config.identityPath !== undefined) {
    const identity = await loadIdentityFile(config.identityPath);
    options.authenticator = nkeyAuthenticator(identity.signingKey);
    if (extra.ownInbox === true) options.inboxPrefix = `_INBOX.${identity.principal}`;
  } else if (extra.ownInbox === true) {
    throw new ServiceConfigError(`${name} needs UNIBUS_IDENTITY: its replies come only to its own inbox`);
  }
  return options;
}

async function watchStatus(nc: NatsConnection, logger: Logger): Promise<void> {
  for await (const s of nc.status()) {
    if (s.type === "disconnect" || s.type === "reconnect" || s.type === "error") {
      logger.warn({ op: "connection", event: s.type }, "connection status");
    }
  }
}

/**
 * The entry of a kit service: connect with the kit's configuration
 * ({@link loadServiceConfig}), then `create(env)` on that connection. `create`
 * gets the service's environment to read its own variables.
 */
export function kitServiceEntry(name: string, create: (env: NodeJS.ProcessEnv) => CreateService, connection: KitConnectionOptions = {}): ServiceEntry {
  return {
    name,
    async start(env, logger) {
      const config = loadServiceConfig(env);
      const nc = await connect(await connectOptions(config, name, connection));
      try {
        void watchStatus(nc, logger).catch(() => undefined);
        const running = await create(env)(nc, { logger, bucketReplicas: config.bucketReplicas, bucketBudgetMs: config.bucketBudgetMs });
        return {
          closed: nc.closed(),
          async stop() {
            await running.stop();
            await nc.drain();
          },
        };
      } catch (err) {
        await nc.close().catch(() => undefined);
        throw err;
      }
    },
  };
}

/** The logger of one service in a process: pino at `UNIBUS_LOG_LEVEL` (info if unset or invalid), `svc` bound. */
function serviceLogger(env: NodeJS.ProcessEnv, name: string): Logger {
  const level = env["UNIBUS_LOG_LEVEL"] || LogLevel.Info;
  const valid = (Object.values(LogLevel) as string[]).includes(level);
  return pino({ level: valid ? level : LogLevel.Info }).child({ svc: name });
}

/** One service of a {@link runServiceProcess} process, with its own environment. */
export interface ServiceProcessMember {
  readonly entry: ServiceEntry;
  readonly env: NodeJS.ProcessEnv;
}

/**
 * A whole service process: start every member (concurrently: one may wait
 * for buckets another creates), drain all on SIGTERM/SIGINT. It fails as a
 * unit, with one clear log line: if any member fails to start or its
 * connection closes unexpectedly, the process exits non-zero and whoever
 * supervises it restarts all of them, so no member is ever silently missing.
 * The only kit function that touches `process`.
 */
export async function runServiceProcess(members: readonly ServiceProcessMember[]): Promise<void> {
  const loggers = members.map((m) => serviceLogger(m.env, m.entry.name));
  const started: (StartedService | undefined)[] = members.map(() => undefined);
  let stopping = false;
  let failed = false;
  const fail = (i: number, op: string, message: string, err: unknown): void => {
    if (stopping || failed) return;
    failed = true;
    loggers[i]?.fatal({ op, err: err instanceof Error ? err.message : err === undefined ? undefined : JSON.stringify(err) }, message);
    // Leaving closes every member's connection; the supervisor restarts them together.
    process.exit(1);
  };
  const starts = members.map(async (m, i) => {
    const logger = loggers[i] as Logger;
    try {
      const s = await m.entry.start(m.env, logger);
      started[i] = s;
      void s.closed.then((err) => {
        if (!stopping) fail(i, "connection", "connection closed unexpectedly", err);
      });
    } catch (err) {
      fail(i, "start", `${m.entry.name} failed to start`, err);
    }
  });
  await Promise.all(starts);
  if (failed) return;

  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    for (const logger of loggers) logger.info({ op: "shutdown", signal }, "draining");
    // Draining needs the server; while disconnected it would wait forever, so
    // a grace period bounds it and then the process ends outright.
    const grace = setTimeout(() => {
      for (const logger of loggers) logger.warn({ op: "shutdown", graceMs: SHUTDOWN_GRACE_MS }, "drain did not finish; closing");
      process.exit(1);
    }, SHUTDOWN_GRACE_MS);
    grace.unref();
    void Promise.allSettled(
      started.map(async (s, i) => {
        try {
          await s?.stop();
        } catch (err) {
          loggers[i]?.error({ op: "shutdown", err: err instanceof Error ? err.message : String(err) }, "drain failed");
          throw err;
        }
      }),
    ).then((results) => process.exit(results.some((r) => r.status === "rejected") ? 1 : 0));
  };
  process.once("SIGTERM", () => shutdown("SIGTERM"));
  process.once("SIGINT", () => shutdown("SIGINT"));
}

/**
 * The whole of a service's `main.ts`: load config, connect (reconnecting
 * forever), start, drain on SIGTERM/SIGINT. Exits non-zero with one clear log
 * line when the start fails.
 */
export async function runServiceMain(spec: ServiceMainSpec, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  await runServiceProcess([{ entry: kitServiceEntry(spec.name, () => spec.create), env }]);
}
