import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { isKvPut } from "./membership-store.js";

let server: TestServer;
let nc: NatsConnection;
let kv: KV;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  kv = await new Kvm(jetstream(nc)).create("kv_put_test", { history: 5 });
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

/** Every message of the bucket's stream as a consumer delivers it, in order. */
async function delivered(): Promise<Msg[]> {
  const js = jetstream(nc);
  const consumer = await js.consumers.get("KV_kv_put_test");
  const out: Msg[] = [];
  const info = await consumer.info();
  const messages = await consumer.fetch({ max_messages: info.num_pending });
  for await (const m of messages) out.push(m as unknown as Msg);
  return out;
}

describe("isKvPut", () => {
  it("tells puts (with or without stored headers, empty or not) from delete and purge markers, as the KV-Operation header says", async () => {
    await kv.create("a", "{}"); // stored with Nats-Expected-Last-Subject-Sequence
    await kv.put("b", "{}");
    await kv.put("c", "{}");
    await kv.put("d", ""); // an empty put
    await kv.delete("b");
    await kv.purge("c"); // a rollup: c's put is gone, its marker stays
    const msgs = await delivered();
    expect(msgs.map((m) => m.subject.split(".").at(-1))).toEqual(["a", "b", "d", "b", "c"]);
    expect(msgs[0]!.headers?.get("Nats-Expected-Last-Subject-Sequence")).toBe("0");
    expect(msgs.map((m) => m.headers?.get("KV-Operation") ?? "")).toEqual(["", "", "", "DEL", "PURGE"]);
    expect(msgs.map(isKvPut)).toEqual([true, true, true, false, false]);
  });
});
