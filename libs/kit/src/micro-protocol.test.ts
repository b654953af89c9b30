import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { Access, defineService } from "./definition.js";
import { startService } from "./start-service.js";
import type { RunningService } from "./start-service.js";

// The io.nats.micro.v1 response schemas (nats-io/jsm.go schemas/micro/v1),
// expressed as checks: `nats micro` rejects a reply that misses any of these.
const NAME = /^[a-zA-Z0-9_-]+$/;
const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;

type Json = Record<string, unknown>;

function expectStringMap(value: unknown): void {
  if (value === null) return;
  expect(typeof value).toBe("object");
  for (const v of Object.values(value as Json)) expect(typeof v).toBe("string");
}

function expectIdentity(r: Json, type: string): void {
  expect(r["type"]).toBe(type);
  expect(r["name"]).toMatch(NAME);
  expect(typeof r["id"]).toBe("string");
  expect((r["id"] as string).length).toBeGreaterThan(0);
  expect(r["version"]).toMatch(SEMVER);
  expect(r).toHaveProperty("metadata");
  expectStringMap(r["metadata"]);
}

function expectInteger(value: unknown): void {
  expect(Number.isSafeInteger(value)).toBe(true);
}

let server: TestServer;
let nc: NatsConnection;
let running: RunningService;

beforeAll(async () => {
  server = await startTestServer({ jetstream: false });
  nc = await server.connect();
  const definition = defineService({
    name: "micro-check",
    version: "0.3.0",
    description: "micro protocol check",
    endpoints: {
      status: {
        subject: "unibus.v1.microcheck.status",
        request: "healthz.status.request",
        reply: "healthz.status.reply",
        mutates: false,
        access: Access.Public,
        async handler() {
          return { status: "ok", service: "micro-check", version: "0.3.0" };
        },
      },
    },
  });
  running = await startService(nc, definition, { logger: pino({ level: "silent" }) });
});

afterAll(async () => {
  await running?.stop();
  await server?.stop();
});

async function control(verb: string): Promise<Json> {
  return (await nc.request(`$SRV.${verb}.micro-check`, undefined, { timeout: 5_000 })).json<Json>();
}

describe("micro protocol", () => {
  it("$SRV.PING/INFO/STATS answer only an inbox: a reply subject outside _INBOX. gets nothing", async () => {
    const seen: string[] = [];
    const sub = nc.subscribe("$KV.users.>", { callback: (_e, m) => void seen.push(m.subject) });
    await nc.flush();
    const before = running.droppedRequests();
    for (const verb of ["PING", "INFO", "STATS"]) nc.publish(`$SRV.${verb}.micro-check`, undefined, { reply: `$KV.users.${verb}` });
    // Positive control after them: answered on an inbox, so the three were handled (in order) before it.
    expectIdentity(await control("PING"), "io.nats.micro.v1.ping_response");
    await nc.flush();
    sub.unsubscribe();
    expect(seen).toEqual([]);
    expect(running.droppedRequests()).toBe(before + 3);
  });

  it("$SRV.PING answers an io.nats.micro.v1.ping_response", async () => {
    expectIdentity(await control("PING"), "io.nats.micro.v1.ping_response");
  });

  it("$SRV.INFO answers an io.nats.micro.v1.info_response naming every endpoint", async () => {
    const info = await control("INFO");
    expectIdentity(info, "io.nats.micro.v1.info_response");
    expect(info["description"]).toBe("micro protocol check");
    const endpoints = info["endpoints"] as Json[];
    // The service's own endpoint, and the schema endpoint the kit adds to every service.
    expect(endpoints.map((e) => e["name"]).sort()).toEqual(["schema", "status"]);
    const ep = endpoints.find((e) => e["name"] === "status");
    expect(ep?.["name"]).toMatch(NAME);
    expect(ep?.["subject"]).toBe("unibus.v1.microcheck.status");
    expect(ep?.["queue_group"]).toBe("q");
    expectStringMap(ep?.["metadata"]);
    expect(ep?.["metadata"]).toMatchObject({ access: "public", mutates: "false", request: "healthz.status.request", reply: "healthz.status.reply" });
    expect((ep?.["metadata"] as Json)["schema_version"]).toMatch(/^[0-9a-f]{16}$/);
    expect(info["metadata"]).toMatchObject({ "unibus.schema": "unibus.v1.microcheck.schema" });
  });

  it("$SRV.STATS answers an io.nats.micro.v1.stats_response that counts requests and error replies", async () => {
    await nc.request("unibus.v1.microcheck.status", "{}", { timeout: 5_000 });
    await nc.request("unibus.v1.microcheck.status", "{bad", { timeout: 5_000 });
    const stats = await control("STATS");
    expectIdentity(stats, "io.nats.micro.v1.stats_response");
    expect(Number.isNaN(Date.parse(stats["started"] as string))).toBe(false);
    const ep = (stats["endpoints"] as Json[]).find((e) => e["name"] === "status");
    expect(ep?.["name"]).toMatch(NAME);
    expect(ep?.["subject"]).toBe("unibus.v1.microcheck.status");
    for (const field of ["num_requests", "num_errors", "processing_time", "average_processing_time"]) expectInteger(ep?.[field]);
    expect(typeof ep?.["last_error"]).toBe("string");
    expect(ep?.["num_requests"]).toBe(2);
    expect(ep?.["num_errors"]).toBe(1);
    expect(ep?.["last_error"]).toBe("400 malformed_json");
    expect(ep?.["processing_time"] as number).toBeGreaterThan(0);
    expect(ep?.["data"]).toEqual({ errors_by_reason: { malformed_json: 1 } });
  });
});
