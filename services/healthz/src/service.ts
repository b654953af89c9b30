import type { NatsConnection } from "@nats-io/transport-node";
import { ServiceName } from "@unibus/contracts";
import type { HealthzPostureReply } from "@unibus/contracts";
import { Access, defineService, endpointTable, lazyUsersRoleResolver, startService } from "@unibus/kit";
import type { KitDeps, RunningService, ServiceDefinition } from "@unibus/kit";
import { createPanelHandler } from "@unibus/panel";
import { pino } from "pino";
import packageJson from "../package.json" with { type: "json" };
import { BUS_SERVICES, BUS_STREAMS } from "./bus.js";
import type { RequiredStream } from "./bus.js";
import { buildPosture, postureHandler } from "./handlers/posture.js";
import { statusHandler } from "./handlers/status.js";
import { startHealthHttp } from "./http.js";
import type { HealthHttpServer, ListenAddress } from "./http.js";
import { checkReadiness } from "./probe.js";
import type { Readiness } from "./probe.js";
import { PROMETHEUS_CONTENT_TYPE, scrapeBusMetrics } from "./scrape.js";

export { buildPosture } from "./handlers/posture.js";

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
  /**
   * Serve the static admin panel at `/panel/` on the same HTTP server,
   * offering `wsUrl` as the bus. The panel has no API: the browser signs its
   * own requests over NATS WebSocket, so this adds files, not power.
   */
  readonly panel?: { readonly wsUrl: string };
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
 * The healthz service definition: every endpoint it exposes, in one table.
 * Subjects and schema ids follow from the names (`unibus.v1.healthz.<name>`,
 * `healthz.<name>.request|reply`); `posture` reads the bus through `posture`.
 */
export function healthzService(posture: () => Promise<HealthzPostureReply>): ServiceDefinition {
  return defineService({
    name: ServiceName.healthz,
    version: packageJson.version,
    description: "Health, posture and version report of the bus",
    endpoints: endpointTable("healthz", {
      // Public so probes and not-yet-enrolled clients can check the bus is up;
      // it reveals only versions.
      status: { access: Access.Public, mutates: false, impl: statusHandler },
      // Admins only: the posture names buckets, leaders and TLS gaps, a map
      // for an attacker inside the bus.
      posture: { access: Access.Admin, mutates: false, impl: postureHandler(posture) },
    }),
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
  const running = await startService(nc, healthzService(posture), { ...deps, logger, resolveRole: deps.resolveRole ?? lazyUsersRoleResolver(nc) });
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
          ...(opts.panel === undefined ? {} : { static: createPanelHandler({ wsUrl: opts.panel.wsUrl }) }),
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
