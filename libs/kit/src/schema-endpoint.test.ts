import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { SchemaRegistry, decodeReply, schemas } from "@unibus/contracts";
import type { ServiceSchemaReply } from "@unibus/contracts";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { Access, ServiceDefinitionError, defineService } from "./definition.js";
import type { EndpointSpec, ServiceDefinition } from "./definition.js";
import { describeEndpoints, schemaVersion, subjectNamespace } from "./schema-endpoint.js";
import { startService } from "./start-service.js";
import type { RunningService } from "./start-service.js";

const status = (subject: string): EndpointSpec => ({
  subject,
  request: "healthz.status.request",
  reply: "healthz.status.reply",
  mutates: false,
  access: Access.Public,
  async handler() {
    return { status: "ok", service: "schema-check", version: "1.2.3" };
  },
});

function service(endpoints: Record<string, EndpointSpec>): ServiceDefinition {
  return defineService({ name: "schema-check", version: "1.2.3", description: "schema endpoint check", endpoints });
}

describe("describeEndpoints", () => {
  it("adds a public, read-only schema endpoint under the service's subject namespace", () => {
    const d = describeEndpoints(service({ status: status("unibus.v1.schemacheck.status") }));
    expect(Object.keys(d.endpoints).sort()).toEqual(["schema", "status"]);
    expect(d.schemaSubject).toBe("unibus.v1.schemacheck.schema");
    expect(d.endpoints["schema"]).toMatchObject({ subject: "unibus.v1.schemacheck.schema", access: Access.Public, mutates: false });
    expect(d.schemaVersions.get("status")).toBe(schemaVersion(schemas["healthz.status.request"], schemas["healthz.status.reply"]));
  });

  it("adds none when the endpoints share no unibus.v1.<namespace>: no subject is sure to be the service's own", () => {
    expect(subjectNamespace(service({ a: status("unibus.v1.one.a"), b: status("unibus.v1.two.b") }))).toBeUndefined();
    expect(subjectNamespace(service({ a: status("test.echo.a") }))).toBeUndefined();
    expect(subjectNamespace(service({}))).toBeUndefined();
    const d = describeEndpoints(service({ a: status("test.echo.a") }));
    expect(Object.keys(d.endpoints)).toEqual(["a"]);
    expect(d.schemaSubject).toBeUndefined();
  });

  it("refuses a definition that already uses the reserved name or subject", () => {
    expect(() => describeEndpoints(service({ schema: status("unibus.v1.schemacheck.x") }))).toThrow(ServiceDefinitionError);
    expect(() => describeEndpoints(service({ other: status("unibus.v1.schemacheck.schema") }))).toThrow(ServiceDefinitionError);
  });

  it("the schema version changes exactly when a schema changes", () => {
    const req = schemas["healthz.status.request"];
    const rep = schemas["healthz.status.reply"];
    expect(schemaVersion(req, rep)).toBe(schemaVersion(structuredClone(req), structuredClone(rep)));
    expect(schemaVersion(req, rep)).not.toBe(schemaVersion({ ...req, description: "changed" }, rep));
    expect(schemaVersion(req, rep)).not.toBe(schemaVersion(req, { ...rep, description: "changed" }));
  });
});

describe("the schema endpoint on a running service", () => {
  let server: TestServer;
  let nc: NatsConnection;
  let running: RunningService;

  beforeAll(async () => {
    server = await startTestServer({ jetstream: false });
    nc = await server.connect();
    running = await startService(nc, service({ status: status("unibus.v1.schemacheck.status") }), { logger: pino({ level: "silent" }) });
  });

  afterAll(async () => {
    await running?.stop();
    await server?.stop();
  });

  it("answers an unsigned request with every endpoint's access, schema ids and JSON Schemas, matching the INFO metadata", async () => {
    const reply = decodeReply<ServiceSchemaReply>(await nc.request("unibus.v1.schemacheck.schema", "{}", { timeout: 5_000 }));
    expect(new SchemaRegistry().validator("common.schema.reply")(reply)).toEqual({ ok: true });
    expect(reply).toMatchObject({ service: "schema-check", version: "1.2.3" });
    const ep = reply.endpoints.find((e) => e.name === "status");
    expect(ep).toMatchObject({ subject: "unibus.v1.schemacheck.status", access: "public", mutates: false, request: "healthz.status.request", reply: "healthz.status.reply" });
    expect(JSON.parse(ep?.requestSchema ?? "")).toEqual(schemas["healthz.status.request"]);
    expect(JSON.parse(ep?.replySchema ?? "")).toEqual(schemas["healthz.status.reply"]);
    expect(reply.endpoints.map((e) => e.name).sort()).toEqual(["schema", "status"]);

    const info = (await nc.request("$SRV.INFO.schema-check", undefined, { timeout: 5_000 })).json<{
      endpoints: Array<{ name: string; metadata: Record<string, string> }>;
    }>();
    for (const e of reply.endpoints) {
      expect(info.endpoints.find((i) => i.name === e.name)?.metadata).toMatchObject({
        access: e.access,
        mutates: String(e.mutates),
        request: e.request,
        reply: e.reply,
        schema_version: e.schemaVersion,
      });
    }
  });

  it("rejects a request with fields as a schema violation", async () => {
    const msg = await nc.request("unibus.v1.schemacheck.schema", JSON.stringify({ endpoint: "status" }), { timeout: 5_000 });
    expect(() => decodeReply(msg)).toThrow(expect.objectContaining({ code: 400, reason: "schema_violation" }));
  });
});
