import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { createIdentity, writeIdentityFile } from "@unibus/crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { ServiceConfigError, connectOptions, loadServiceConfig } from "./service-main.js";

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

describe("connectOptions ownInbox", () => {
  it("takes replies under the identity's own inbox, for a user allowed no other", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kit-inbox-"));
    try {
      const identity = createIdentity();
      await writeIdentityFile(join(dir, "svc.id"), identity);
      const config = loadServiceConfig({ UNIBUS_URL: "nats://127.0.0.1:4222", UNIBUS_IDENTITY: join(dir, "svc.id") });
      expect((await connectOptions(config, "svc-test", { ownInbox: true })).inboxPrefix).toBe(`_INBOX.${identity.principal}`);
      // Control: without the option the kit keeps the default inbox.
      expect((await connectOptions(config, "svc-test")).inboxPrefix).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses to start without an identity: there would be no own inbox to reply to", async () => {
    await expect(connectOptions(loadServiceConfig({ UNIBUS_URL: "nats://127.0.0.1:4222" }), "svc-test", { ownInbox: true })).rejects.toThrow(ServiceConfigError);
  });
});
