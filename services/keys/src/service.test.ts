import { afterAll, beforeAll, expect, it } from "vitest";
import { pino } from "pino";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { createKeysService } from "./service.js";
import packageJson from "../package.json" with { type: "json" };

let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
});

afterAll(async () => {
  await server?.stop();
});

it("registers as the keys micro service, visible in $SRV.INFO with its package version", async () => {
  const nc = await server.connect();
  const running = await createKeysService(nc, { logger: pino({ level: "silent" }) });
  try {
    const info = (await nc.request("$SRV.INFO.keys", undefined, { timeout: 5_000 })).json<Record<string, unknown>>();
    expect(info).toMatchObject({ type: "io.nats.micro.v1.info_response", name: "keys", version: packageJson.version, id: running.id });
    expect(typeof info["description"]).toBe("string");
  } finally {
    await running.stop();
  }
});
