import type { NatsConnection } from "@nats-io/transport-node";
import type { HealthzPostureReply } from "@unibus/contracts";
import { handles } from "@unibus/kit";
import packageJson from "../../package.json" with { type: "json" };
import { BUS_SERVICES, BUS_STREAMS } from "../bus.js";
import { checkReadiness, serverPosture } from "../probe.js";
import type { HealthzOptions } from "../service.js";

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

/** `posture`: the posture document, built by `posture` (coalesced by the caller). */
export function postureHandler(posture: () => Promise<HealthzPostureReply>) {
  return handles("healthz", "posture", { handler: () => posture() });
}
