import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { ServiceDefinitionError, defineService } from "./definition.js";
import { rawEndpoint } from "./raw-endpoint.js";
import type { RawEndpointSpec } from "./raw-endpoint.js";
import { startService } from "./start-service.js";
import type { RunningService } from "./start-service.js";

type Json = Record<string, unknown>;

const SUBJECT = "rawcheck.REQ";
const REPLY_PREFIX = "_INBOX.";
const handled: string[] = [];

/** A toy protocol: "ok" is answered, "bad" refused as untrusted, "boom" throws. */
const echo: RawEndpointSpec = rawEndpoint({
  subject: SUBJECT,
  protocol: "toy",
  replyPrefix: REPLY_PREFIX,
  metadata: { note: "raw" },
  async handler(msg) {
    const text = msg.string();
    handled.push(text);
    if (text === "boom") throw new Error("handler bug");
    if (text === "bad") {
      msg.respondError(400, "bad request");
      return { code: 400, reason: "invalid_request" };
    }
    msg.respond(new TextEncoder().encode(`echo ${text}`));
    return undefined;
  },
});

const definition = defineService({ name: "raw-check", version: "1.0.0", description: "raw endpoint check", endpoints: {}, raw: { REQ: echo } });
// One server, one client connection and the started service, shared by the tests below.
let bus: { server: TestServer; nc: NatsConnection; running: RunningService } | undefined;
const nc = (): NatsConnection => bus!.nc;

beforeAll(async () => {
  const server = await startTestServer({ jetstream: false });
  const conn = await server.connect();
  bus = { server, nc: conn, running: await startService(conn, definition, { logger: pino({ level: "silent" }) }) };
});

afterAll(async () => {
  await bus?.running.stop();
  await bus?.server.stop();
});

async function stats(): Promise<Json | undefined> {
  const reply = (await nc().request("$SRV.STATS.raw-check", undefined, { timeout: 5_000 })).json<Json>();
  return (reply["endpoints"] as Json[]).find((e) => e["name"] === "REQ");
}

describe("raw endpoints", () => {
  it("are listed in $SRV.INFO with their subject and protocol, and no schema endpoint is added", async () => {
    const info = (await nc().request("$SRV.INFO.raw-check", undefined, { timeout: 5_000 })).json<Json>();
    const endpoints = info["endpoints"] as Json[];
    expect(endpoints.map((e) => [e["name"], e["subject"]])).toEqual([["REQ", SUBJECT]]);
    expect(endpoints[0]?.["metadata"]).toEqual({ protocol: "toy", note: "raw" });
  });

  it("the handler answers in its own protocol; $SRV.STATS counts it with last_error, and a refusal it reports as an error", async () => {
    expect((await nc().request(SUBJECT, "ok", { timeout: 5_000 })).string()).toBe("echo ok");
    expect(await stats()).toMatchObject({ num_requests: 1, num_errors: 0, last_error: "" });
    const refused = await nc().request(SUBJECT, "bad", { timeout: 5_000 });
    expect(refused.headers?.get("Nats-Service-Error-Code")).toBe("400");
    const after = await stats();
    expect(after).toMatchObject({ num_requests: 2, num_errors: 1, last_error: "400 invalid_request", data: { errors_by_reason: { invalid_request: 1 } } });
    expect(after?.["processing_time"] as number).toBeGreaterThan(0);
  });

  it("a handler that throws is answered with a generic 500 and counted, never left hanging", async () => {
    const reply = await nc().request(SUBJECT, "boom", { timeout: 5_000 });
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("500");
    expect(reply.headers?.get("Nats-Service-Error")).toBe("internal error");
    expect(await stats()).toMatchObject({ last_error: "500 internal" });
  });

  it("a request whose reply subject is outside the protocol's prefix is dropped unhandled", async () => {
    const seen: string[] = [];
    const sub = nc().subscribe("elsewhere.>", { callback: (_e, m) => void seen.push(m.subject) });
    await nc().flush();
    const before = bus!.running.droppedRequests();
    handled.length = 0;
    nc().publish(SUBJECT, "ok", { reply: "elsewhere.victim" });
    // Positive control: answered after it on the same subscription, so the dropped one was seen first.
    expect((await nc().request(SUBJECT, "control", { timeout: 5_000 })).string()).toBe("echo control");
    await nc().flush();
    sub.unsubscribe();
    expect(seen).toEqual([]);
    expect(handled).toEqual(["control"]);
    expect(bus!.running.droppedRequests()).toBe(before + 1);
  });
});

describe("defineService with raw endpoints", () => {
  const base = { name: "raw-def", version: "1.0.0", description: "d", endpoints: {} };
  it("refuses an empty reply prefix, which would answer any subject with the service's rights", () => {
    expect(() => defineService({ ...base, raw: { REQ: { ...echo, replyPrefix: "" } } })).toThrow(ServiceDefinitionError);
  });
  it("refuses a wildcard subject and a subject used twice", () => {
    expect(() => defineService({ ...base, raw: { REQ: { ...echo, subject: "rawcheck.>" } } })).toThrow(/literal/);
    expect(() => defineService({ ...base, raw: { A: echo, B: echo } })).toThrow(/used twice/);
  });
  it("accepts a well-formed raw endpoint (control)", () => {
    expect(Object.keys(defineService({ ...base, raw: { REQ: echo } }).raw ?? {})).toEqual(["REQ"]);
  });
});
