import type { NatsConnection } from "@nats-io/transport-node";
import client from "prom-client";
import type { MetricObjectWithValues, MetricValue } from "prom-client";
import { MetricsSubject } from "@unibus/kit";
import type { MetricsReply } from "@unibus/kit";

/** Content type of the Prometheus text exposition format prom-client writes. */
export const PROMETHEUS_CONTENT_TYPE = client.register.contentType;

type MetricJson = MetricObjectWithValues<MetricValue<string>>;

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const METRIC_TYPES = new Set(["counter", "gauge", "histogram", "summary"]);

/**
 * Keeps only well-formed metric families: a reply comes from another process,
 * and one bad family must not break the whole scrape.
 */
function wellFormed(m: unknown): m is MetricJson {
  if (typeof m !== "object" || m === null) return false;
  const r = m as Partial<MetricJson>;
  return typeof r.name === "string" && METRIC_NAME.test(r.name) && typeof r.help === "string" && METRIC_TYPES.has(String(r.type)) && Array.isArray(r.values)
    && r.values.every((v) => typeof v === "object" && v !== null && typeof v.value === "number" && typeof v.labels === "object" && v.labels !== null);
}

/**
 * Asks every instance of every service for its registry over NATS
 * (`$SRV.METRICS`), labels each series with `service_instance` (the micro
 * instance id) and lets prom-client merge and render them: one scrape target
 * for the whole bus, in the Prometheus text format, never hand-written.
 * Instances that do not answer within `timeoutMs` are simply absent.
 */
export async function scrapeBusMetrics(nc: NatsConnection, timeoutMs = 2_000): Promise<{ text: string; instances: number }> {
  const perInstance: MetricJson[][] = [];
  const seen = new Set<string>();
  try {
    const iter = await nc.requestMany(MetricsSubject.all, undefined, { maxWait: timeoutMs, strategy: "stall", stall: 300 });
    for await (const m of iter) {
      let reply: MetricsReply;
      try {
        reply = m.json<MetricsReply>();
      } catch {
        continue;
      }
      if (typeof reply.id !== "string" || seen.has(reply.id) || !Array.isArray(reply.metrics)) continue;
      seen.add(reply.id);
      perInstance.push(
        reply.metrics.filter(wellFormed).map((family) => ({
          ...family,
          // Series of different instances never collide, so summing is a union.
          aggregator: "sum",
          values: family.values.map((v) => ({ ...v, labels: { ...v.labels, service_instance: reply.id } })),
        })),
      );
    }
  } catch {
    // No responders: an empty scrape.
  }
  const merged = client.AggregatorRegistry.aggregate(perInstance);
  return { text: await merged.metrics(), instances: seen.size };
}
