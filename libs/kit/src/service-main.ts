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

/** The nats.js options a service main connects with (exported for its tests). */
export async function connectOptions(config: ServiceConfig, name: string): Promise<ConnectionOptions> {
  const options: ConnectionOptions = {
    servers: [...config.servers],
    name,
    // A service outlives NATS restarts and starts before NATS in compose.
    maxReconnectAttempts: -1,
    waitOnFirstConnect: true,
  };
  // A tls:// seed means TLS or nothing: without this nats.js would talk plaintext to a
  // "node" that offers no TLS (a relay in the middle). The CA comes from NODE_EXTRA_CA_CERTS.
  if (config.servers.some((u) => /^tls:\/\//i.test(u))) options.tls = {};
  if (config.identityPath !== undefined) {
    const identity = await loadIdentityFile(config.identityPath);
    options.authenticator = nkeyAuthenticator(identity.signingKey);
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
 * The whole of a service's `main.ts`: load config, connect (reconnecting
 * forever), start, drain on SIGTERM/SIGINT. Exits non-zero with one clear log
 * line when the start fails. The only kit function that touches `process`.
 */
export async function runServiceMain(spec: ServiceMainSpec, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  let logger: Logger = pino({ level: "info" }).child({ svc: spec.name });
  let nc: NatsConnection | undefined;
  try {
    const config = loadServiceConfig(env);
    logger = pino({ level: config.logLevel }).child({ svc: spec.name });
    nc = await connect(await connectOptions(config, spec.name));
    void watchStatus(nc, logger).catch(() => undefined);
    const running = await spec.create(nc, { logger, bucketReplicas: config.bucketReplicas, bucketBudgetMs: config.bucketBudgetMs });
    const connection = nc;
    let stopping = false;
    const shutdown = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      logger.info({ op: "shutdown", signal }, "draining");
      // Draining needs the server; while disconnected it would wait forever, so
      // a grace period bounds it and then the connection is closed outright.
      const grace = setTimeout(() => {
        logger.warn({ op: "shutdown", graceMs: SHUTDOWN_GRACE_MS }, "drain did not finish; closing");
        void connection.close().finally(() => process.exit(1));
      }, SHUTDOWN_GRACE_MS);
      grace.unref();
      running
        .stop()
        .then(() => connection.drain())
        .then(
          () => process.exit(0),
          (err: unknown) => {
            logger.error({ op: "shutdown", err: err instanceof Error ? err.message : String(err) }, "drain failed");
            process.exit(1);
          },
        );
    };
    process.once("SIGTERM", () => shutdown("SIGTERM"));
    process.once("SIGINT", () => shutdown("SIGINT"));
    const closed = await connection.closed();
    if (!stopping) {
      logger.fatal({ op: "connection", err: closed?.message }, "connection closed unexpectedly");
      process.exit(1);
    }
  } catch (err) {
    logger.fatal({ op: "start", err: err instanceof Error ? err.message : String(err) }, `${spec.name} failed to start`);
    await nc?.close().catch(() => undefined);
    process.exit(1);
  }
}
