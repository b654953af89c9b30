import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { connectOptions, loadServiceConfig } from "./service-main.js";

let server: TestServer;

beforeAll(async () => {
  // A server without TLS: what a relay posing as a node would offer.
  server = await startTestServer({ jetstream: false });
});

afterAll(async () => {
  await server?.stop();
});

/** The options, made to try once (a service retries forever). */
async function once(url: string) {
  const opts = await connectOptions(loadServiceConfig({ UNIBUS_URL: url }), "svc-test");
  return { ...opts, waitOnFirstConnect: false, maxReconnectAttempts: 0, reconnect: false };
}

describe("connectOptions", () => {
  it("a tls:// seed refuses a server that offers no TLS instead of going plaintext", async () => {
    const opts = await once(`tls://127.0.0.1:${server.port}`);
    expect(opts.tls).toEqual({});
    const outcome = await connect(opts).then(
      async (nc) => {
        await nc.close();
        return "connected";
      },
      (err: unknown) => `refused: ${(err as Error).message}`,
    );
    expect(outcome).toMatch(/^refused: .*tls/i);
  });

  it("a nats:// seed asks for no TLS, and connects to the same server (control)", async () => {
    const opts = await once(`nats://127.0.0.1:${server.port}`);
    expect(opts.tls).toBeUndefined();
    const nc = await connect(opts);
    await nc.close();
  });
});
