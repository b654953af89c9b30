import client from "prom-client";
import type { Counter, Gauge, Histogram, MetricObjectWithValues, MetricValue } from "prom-client";
import type { Logger } from "pino";
import { INBOX_ROOT } from "./reply-rule.js";

/**
 * Every unibus process keeps its metrics on prom-client's default registry
 * (`client.register`), so counters added anywhere in the process (the kit,
 * the auth callout, a service's own) are reported together without being
 * passed around.
 */
export const metricsRegistry = client.register;

/** `$SRV.METRICS[.<service>]`: where a process answers with its registry as JSON. */
export const MetricsSubject = {
  /** Every instance of every service answers here. */
  all: "$SRV.METRICS",
  /** One service's instances: `$SRV.METRICS.<service>`. */
  of: (service: string): string => `$SRV.METRICS.${service}`,
} as const;

/** What an instance answers on {@link MetricsSubject}. */
export interface MetricsReply {
  /** Service name. */
  readonly name: string;
  /** Micro instance id: the `instance` label healthz adds. */
  readonly id: string;
  /** `client.register.getMetricsAsJSON()` of the answering process. */
  readonly metrics: MetricObjectWithValues<MetricValue<string>>[];
}

/** Label values of {@link requestCounter} and {@link requestDuration}: `ok` or the error reason code. */
export const RequestOutcome = { ok: "ok" } as const;

function singleton<T>(name: string, make: () => T): T {
  // Two copies of this module in one process (a test importing the kit
  // twice) must share the series, not throw on a duplicate registration.
  return (metricsRegistry.getSingleMetric(name) as T | undefined) ?? make();
}

/** Requests answered, by service, endpoint and outcome (`ok` or the error reason). */
export const requestCounter: Counter<"service" | "endpoint" | "outcome"> = singleton(
  "unibus_requests_total",
  () => new client.Counter({ name: "unibus_requests_total", help: "Requests answered, by service, endpoint and outcome (ok or error reason)", labelNames: ["service", "endpoint", "outcome"] as const }),
);

/** Time from receipt to reply, by service, endpoint and outcome. */
export const requestDuration: Histogram<"service" | "endpoint" | "outcome"> = singleton(
  "unibus_request_duration_seconds",
  () =>
    new client.Histogram({
      name: "unibus_request_duration_seconds",
      help: "Time from receipt to reply, by service, endpoint and outcome",
      labelNames: ["service", "endpoint", "outcome"] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    }),
);

/** JetStream KV operations that failed (not a compare-and-set conflict), by service and operation. */
export const kvErrorCounter: Counter<"service" | "op"> = singleton(
  "unibus_kv_errors_total",
  () => new client.Counter({ name: "unibus_kv_errors_total", help: "JetStream KV operations that failed, by service and operation", labelNames: ["service", "op"] as const }),
);

/** Always 1 per running service, so every scraped instance shows up even before its first request. */
export const serviceInfo: Gauge<"service" | "version"> = singleton(
  "unibus_service_info",
  () => new client.Gauge({ name: "unibus_service_info", help: "A running unibus service (always 1), by service and version", labelNames: ["service", "version"] as const }),
);

/**
 * A counter on the default registry for a service's own events (kicks,
 * rekeys, blob bytes), so services need no prom-client import of their own.
 * Defining the same name twice returns the first counter.
 */
export function defineCounter<L extends string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
  return singleton(name, () => new client.Counter({ name, help, labelNames }));
}

/** Records one answered request. */
export function recordRequest(service: string, endpoint: string, seconds: number, failureReason?: string): void {
  const labels = { service, endpoint, outcome: failureReason ?? RequestOutcome.ok };
  requestCounter.inc(labels);
  requestDuration.observe(labels, seconds);
}

interface MetricsConnection {
  subscribe(subject: string, opts: { callback: (err: Error | null, msg: { reply?: string; respond(data: Uint8Array): boolean }) => void }): { unsubscribe(): void };
}

/** A running {@link serveMetrics} responder. */
export interface MetricsResponder {
  stop(): void;
}

/**
 * Answers `$SRV.METRICS` and `$SRV.METRICS.<name>` with this process's
 * registry. Under `$SRV.` on purpose: only admins and the healthz service may
 * publish there (members cannot), and every service user may already
 * subscribe to it, so no grant widens. Only `_INBOX.` replies are answered,
 * as for micro discovery (threat: a requester naming a KV or JetStream API
 * subject as the reply, to have the service write there with its rights).
 */
export function serveMetrics(nc: MetricsConnection, opts: { name: string; id: string; version?: string; logger?: Logger }): MetricsResponder {
  serviceInfo.set({ service: opts.name, version: opts.version ?? "unknown" }, 1);
  const encoder = new TextEncoder();
  const answer = (err: Error | null, msg: { reply?: string; respond(data: Uint8Array): boolean }): void => {
    if (err !== null) {
      opts.logger?.warn({ op: "metrics", err: err.message }, "metrics subscription failed");
      return;
    }
    if (msg.reply === undefined || !msg.reply.startsWith(INBOX_ROOT) || msg.reply.length === INBOX_ROOT.length) return;
    void metricsRegistry.getMetricsAsJSON().then(
      (metrics) => {
        const reply: MetricsReply = { name: opts.name, id: opts.id, metrics };
        msg.respond(encoder.encode(JSON.stringify(reply)));
      },
      (e: unknown) => opts.logger?.warn({ op: "metrics", err: e instanceof Error ? e.message : String(e) }, "metrics collection failed"),
    );
  };
  const subs = [nc.subscribe(MetricsSubject.all, { callback: answer }), nc.subscribe(MetricsSubject.of(opts.name), { callback: answer })];
  return {
    stop() {
      for (const s of subs) s.unsubscribe();
    },
  };
}
