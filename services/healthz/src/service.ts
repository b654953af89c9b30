import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { ServiceName, Subjects } from "@unibus/contracts";
import type { HealthzPostureReply } from "@unibus/contracts";
import { Access, defineService, endpoint, startService } from "@unibus/kit";
import type { KitDeps, Role, RunningService } from "@unibus/kit";
import { pino } from "pino";
import packageJson from "../package.json" with { type: "json" };
import { BUS_SERVICES, BUS_STREAMS, USERS_BUCKET } from "./bus.js";
import type { RequiredStream } from "./bus.js";
import { startHealthHttp } from "./http.js";
import type { HealthHttpServer, ListenAddress } from "./http.js";
import { checkReadiness, serverPosture } from "./probe.js";
import type { Readiness } from "./probe.js";
import { PROMETHEUS_CONTENT_TYPE, scrapeBusMetrics } from "./scrape.js";

/** JetStream encryption at rest as the deployment declares it (nats-server's monitoring does not report it). */
export interface AtRestDeclaration {
  readonly encrypted: boolean | null;
  readonly cipher: string | null;
}

/** What healthz watches and where it serves HTTP; every field has a default. */
export interface HealthzOptions {
  /** Serve `/livez`, `/readyz`, `/healthz`, `/metrics` here; undefined = no HTTP. */
  readonly http?: ListenAddress;
  /** nats-server monitoring base URLs, for the server's own posture. */
  readonly monitorUrls?: readonly string[];
  /** Streams that must have a leader and current replicas; default every bus bucket. */
  readonly streams?: readonly RequiredStream[];
  /** Services that must answer PING; default every service but healthz. */
  readonly services?: readonly string[];
  readonly atRest?: AtRestDeclaration;
  /** Per check; default 2 s. */
  readonly timeoutMs?: number;
}

/** A started healthz service. */
export interface RunningHealthz extends RunningService {
  /** Base URL of the HTTP server, when one was asked for. */
  readonly httpUrl: string | undefined;
}

/** Runs `fn` once for any number of concurrent callers: a burst of probes costs one round of checks. */
function coalesced<T>(fn: () => Promise<T>): () => Promise<T> {
  let inflight: Promise<T> | undefined;
  return () => {
    inflight ??= fn().finally(() => {
      inflight = undefined;
    });
    return inflight;
  };
}

/**
 * Resolves a caller's role from membership's `users` bucket, read through
 * the stream leader. Opened on first use: healthz must start (and report
 * "not ready") before membership has created the bucket. A read error
 * throws, which the kit answers 503 (fail closed).
 */
function usersRoleResolver(nc: NatsConnection): (principal: string) => Promise<Role | null> {
  let users: Promise<KV> | undefined;
  return async (principal) => {
    users ??= new Kvm(nc).open(USERS_BUCKET, { allow_direct: false }).catch((err: unknown) => {
      users = undefined;
      throw err;
    });
    const entry = await (await users).get(principal);
    if (entry === null || entry.operation !== "PUT") return null;
    const user = entry.json<{ role?: string; status?: string }>();
    return user.status === "active" && (user.role === "admin" || user.role === "member") ? user.role : null;
  };
}

/** The posture document: readiness plus the server's security settings. */
export async function buildPosture(nc: NatsConnection, opts: HealthzOptions): Promise<HealthzPostureReply> {
  const probe = {
    streams: opts.streams ?? BUS_STREAMS,
    services: opts.services ?? BUS_SERVICES,
    monitorUrls: opts.monitorUrls ?? [],
    ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
  };
  const [readiness, server] = await Promise.all([checkReadiness(nc, probe), serverPosture(probe.monitorUrls, opts.timeoutMs)]);
  return {
    ready: readiness.ready,
    version: packageJson.version,
    checked_at: new Date().toISOString(),
    server_version: server.version,
    mode: server.mode,
    cluster_size: server.cluster_size,
    meta_leader: server.meta_leader,
    at_rest: { encrypted: opts.atRest?.encrypted ?? null, cipher: opts.atRest?.cipher ?? null },
    tls: { client: server.tls.client, route: server.tls.route },
    sync_policy: server.sync_policy,
    buckets: readiness.buckets,
    services: readiness.services,
    checks: readiness.checks,
  };
}

/** The healthz service's endpoints; `posture` reads the bus through `nc`. */
export function healthzService(posture: () => Promise<HealthzPostureReply>) {
  return defineService({
    name: ServiceName.healthz,
    version: packageJson.version,
    description: "Health, posture and version report of the bus",
    endpoints: {
      status: endpoint({
        subject: Subjects.healthz.status,
        request: "healthz.status.request",
        reply: "healthz.status.reply",
        mutates: false,
        // Public so probes and not-yet-enrolled clients can check the bus is up;
        // it reveals only versions.
        access: Access.Public,
        async handler() {
          return { status: "ok", service: ServiceName.healthz, version: packageJson.version };
        },
      }),
      posture: endpoint({
        subject: Subjects.healthz.posture,
        request: "healthz.posture.request",
        reply: "healthz.posture.reply",
        mutates: false,
        // Admins only: the posture names buckets, leaders and TLS gaps, a map
        // for an attacker inside the bus.
        access: Access.Admin,
        handler: () => posture(),
      }),
    },
  });
}

/**
 * Starts the healthz service on `nc`: the micro endpoints and, when
 * `opts.http` is set, the HTTP health server. Readiness uses `nc`, the
 * service's own connection, with read-only rights (account info, stream info
 * of the bus buckets, micro PING).
 */
export async function createHealthzService(nc: NatsConnection, deps: KitDeps = {}, opts: HealthzOptions = {}): Promise<RunningHealthz> {
  const logger = (deps.logger ?? pino({ level: "info" })).child({ svc: ServiceName.healthz });
  const posture = coalesced(() => buildPosture(nc, opts));
  const metrics = coalesced(() => scrapeBusMetrics(nc, opts.timeoutMs));
  const running = await startService(nc, healthzService(posture), { ...deps, logger, resolveRole: deps.resolveRole ?? usersRoleResolver(nc) });
  let http: HealthHttpServer | undefined;
  if (opts.http !== undefined) {
    const probe = (): Promise<Readiness> =>
      checkReadiness(nc, {
        streams: opts.streams ?? BUS_STREAMS,
        services: opts.services ?? BUS_SERVICES,
        monitorUrls: opts.monitorUrls ?? [],
        ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
      });
    const readiness = coalesced(probe);
    try {
      http = await startHealthHttp(
        opts.http,
        {
          async readiness() {
            const r = await readiness();
            return { ready: r.ready, body: { ready: r.ready, checks: r.checks } };
          },
          async posture() {
            const p = await posture();
            return { ready: p.ready, body: p };
          },
          async metrics() {
            const m = await metrics();
            return { contentType: PROMETHEUS_CONTENT_TYPE, text: m.text };
          },
        },
        logger,
      );
    } catch (err) {
      await running.stop();
      throw err;
    }
    logger.info({ op: "http", url: http.url }, "health HTTP listening");
  }
  const server = http;
  return {
    service: running.service,
    name: running.name,
    id: running.id,
    droppedRequests: () => running.droppedRequests(),
    httpUrl: server?.url,
    async stop() {
      await server?.close();
      await running.stop();
    },
  };
}
