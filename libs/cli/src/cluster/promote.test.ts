import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { waitForPeers } from "./convert.js";
import { PEER_PROBE_PREFIX, planPromotion } from "./promote.js";

async function streamNames(nc: NatsConnection): Promise<string[]> {
  return (await nc.request("$JS.API.STREAM.NAMES", "{}")).json<{ streams: string[] | null }>().streams ?? [];
}

describe("the peer probe of a promotion (real server)", () => {
  let server: TestServer;
  let nc: NatsConnection;
  beforeAll(async () => {
    server = await startTestServer();
    nc = await server.connect();
    await new Kvm(nc).create("users");
  });
  afterAll(async () => {
    await nc?.close();
    await server?.stop();
  });

  it("waitForPeers leaves no probe stream behind", async () => {
    await waitForPeers(nc, 1, 10_000);
    expect((await streamNames(nc)).filter((n) => n.startsWith(PEER_PROBE_PREFIX))).toEqual([]);
  });

  it("a probe left by a run killed mid-wait is neither planned nor raised", async () => {
    const name = `${PEER_PROBE_PREFIX}1`;
    const created = (await nc.request(`$JS.API.STREAM.CREATE.${name}`, JSON.stringify({ name, subjects: ["_promote_probe.left"], storage: "memory" }))).json<{ error?: unknown }>();
    expect(created.error).toBeUndefined();
    const planned = (await planPromotion(nc, 3)).map((s) => s.stream);
    expect(planned).toContain("KV_users");
    expect(planned).not.toContain(name);
  });
});
