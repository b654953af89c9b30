import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { Subjects, decodeReply } from "@unibus/contracts";
import type { HealthzStatusReply } from "@unibus/contracts";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import type { RunningService } from "@unibus/kit";
import { createHealthzService } from "./service.js";
import packageJson from "../package.json" with { type: "json" };

let server: TestServer;
let nc: NatsConnection;
let running: RunningService;

beforeAll(async () => {
  server = await startTestServer({ jetstream: false });
  nc = await server.connect();
  running = await createHealthzService(nc, { logger: pino({ level: "silent" }) });
});

afterAll(async () => {
  await running?.stop();
  await server?.stop();
});

describe("healthz.status", () => {
  it("answers an unsigned request with ok and the healthz version", async () => {
    const reply = decodeReply<HealthzStatusReply>(await nc.request(Subjects.healthz.status, "{}", { timeout: 5_000 }));
    expect(reply).toEqual({ status: "ok", service: "healthz", version: packageJson.version });
  });

  it("rejects a request with unknown fields as a schema violation", async () => {
    const msg = await nc.request(Subjects.healthz.status, JSON.stringify({ verbose: true }), { timeout: 5_000 });
    expect(() => decodeReply(msg)).toThrow(expect.objectContaining({ code: 400, reason: "schema_violation" }));
  });

  it("is listed in $SRV.INFO with its status endpoint and the kit's schema endpoint", async () => {
    const info = (await nc.request("$SRV.INFO.healthz", undefined, { timeout: 5_000 })).json<{ endpoints: Array<{ name: string; subject: string }> }>();
    expect(info.endpoints).toEqual([
      expect.objectContaining({ name: "status", subject: Subjects.healthz.status }),
      expect.objectContaining({ name: "schema", subject: "unibus.v1.healthz.schema" }),
    ]);
  });
});
