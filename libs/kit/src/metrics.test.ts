import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createInbox } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { Access, defineService, endpoint } from "./definition.js";
import { MetricsSubject } from "./metrics.js";
import type { MetricsReply } from "./metrics.js";
import { startService } from "./start-service.js";
import type { RunningService } from "./start-service.js";

// Reuses the public healthz status contract so no test schema is needed.
const definition = defineService({
  name: "metrics-test",
  version: "1.0.0",
  description: "kit metrics test service",
  endpoints: {
    probe: endpoint({
      subject: "unibus.v1.metricstest.probe",
      request: "healthz.status.request",
      reply: "healthz.status.reply",
      mutates: false,
      access: Access.Public,
      async handler() {
        return { status: "ok" as const, service: "metrics-test", version: "1.0.0" };
      },
    }),
  },
});

let server: TestServer;
let nc: NatsConnection;
let running: RunningService;

beforeAll(async () => {
  server = await startTestServer({ jetstream: false });
  nc = await server.connect();
  running = await startService(nc, definition, { logger: pino({ level: "silent" }) });
});

afterAll(async () => {
  await running?.stop();
  await server?.stop();
});

function counterValue(reply: MetricsReply, outcome: string): number | undefined {
  const family = reply.metrics.find((m) => m.name === "unibus_requests_total");
  return family?.values.find((v) => v.labels["service"] === "metrics-test" && v.labels["endpoint"] === "probe" && v.labels["outcome"] === outcome)?.value;
}

describe("kit metrics", () => {
  it("counts every answered request by outcome and answers $SRV.METRICS.<service> with the process registry", async () => {
    await nc.request("unibus.v1.metricstest.probe", "{}", { timeout: 5_000 });
    await nc.request("unibus.v1.metricstest.probe", "not json", { timeout: 5_000 });
    await nc.request("unibus.v1.metricstest.probe", JSON.stringify({ extra: 1 }), { timeout: 5_000 });
    const reply = (await nc.request(MetricsSubject.of("metrics-test"), undefined, { timeout: 5_000 })).json<MetricsReply>();
    expect(reply).toMatchObject({ name: "metrics-test", id: running.id });
    expect(counterValue(reply, "ok")).toBe(1);
    expect(counterValue(reply, "malformed_json")).toBe(1);
    expect(counterValue(reply, "schema_violation")).toBe(1);
    const histogram = reply.metrics.find((m) => m.name === "unibus_request_duration_seconds");
    const count = histogram?.values.find((v) => (v as { metricName?: string }).metricName === "unibus_request_duration_seconds_count" && v.labels["outcome"] === "ok");
    expect(count?.value).toBe(1);
    const info = reply.metrics.find((m) => m.name === "unibus_service_info");
    expect(info?.values).toContainEqual({ value: 1, labels: { service: "metrics-test", version: "1.0.0" } });
  });

  it("does not answer a metrics request whose reply subject is not an inbox", async () => {
    const sub = nc.subscribe("not.an.inbox", { max: 1 });
    const dropped = running.droppedRequests();
    nc.publish(MetricsSubject.all, undefined, { reply: "not.an.inbox" });
    // The same request with an inbox is answered; ordering on one connection proves the first was seen.
    const inbox = createInbox();
    const answered = nc.subscribe(inbox, { max: 1 });
    nc.publish(MetricsSubject.all, undefined, { reply: inbox });
    for await (const m of answered) expect(m.json<MetricsReply>().name).toBe("metrics-test");
    expect(running.droppedRequests()).toBe(dropped + 1);
    sub.unsubscribe();
    expect(sub.getProcessed()).toBe(0);
  });
});
