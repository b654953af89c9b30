import { Writable } from "node:stream";
import { afterAll, beforeAll, expect, it } from "vitest";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { eventually, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { MembershipReadBucket } from "./store/records.js";
import { createKeysService } from "./service.js";
import type { RunningKeysService } from "./service.js";

let server: TestServer;
let nc: NatsConnection;
let keys: RunningKeysService | undefined;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
});

afterAll(async () => {
  await keys?.stop();
  await server?.stop();
});

it("started before membership made its buckets, keys waits for them and then serves instead of crashing", async () => {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line));
      done();
    },
  });
  let failed: unknown;
  const starting = createKeysService(nc, { logger: pino({ level: "warn" }, sink), bucketBudgetMs: 30_000 }).then(
    (k) => (keys = k),
    (err: unknown) => (failed = err),
  );
  // Wait for the observable retry on the missing `users` bucket, then play membership.
  await eventually(
    () => lines.some((l) => l["bucket"] === MembershipReadBucket.users && l["msg"] === "bucket set-up failed; retrying") || failed !== undefined,
    Boolean,
    { timeoutMs: 15_000, what: "keys waiting for the users bucket" },
  );
  expect(failed).toBeUndefined();
  const kvm = new Kvm(jetstream(nc));
  await kvm.create(MembershipReadBucket.users);
  await kvm.create(MembershipReadBucket.members);
  await starting;
  expect(failed).toBeUndefined();
  const info = (await nc.request("$SRV.INFO.keys", undefined, { timeout: 5_000 })).json<Record<string, unknown>>();
  expect(info).toMatchObject({ name: "keys", id: keys?.id });
});
