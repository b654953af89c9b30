import { connect } from "@nats-io/transport-node";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nkeyAuthenticator } from "./authenticator.js";
import { SigningKey, verifySignature } from "./ed25519.js";
import { utf8 } from "./encoding.js";

describe("nkeyAuthenticator", () => {
  it("signs the nonce's UTF-8 bytes, sends standard base64, and sends no signature without a nonce", () => {
    const key = SigningKey.generate();
    const auth = nkeyAuthenticator(key);
    const { nkey, sig } = auth("4nkDUiy8QzbTyg");
    expect(nkey).toBe(key.principal);
    expect(sig).toMatch(/^[A-Za-z0-9+/]{86}==$/);
    expect(verifySignature(key.publicKey, utf8("4nkDUiy8QzbTyg"), Buffer.from(sig, "base64"))).toBe(true);
    expect(auth()).toEqual({ nkey: key.principal, sig: "" });
  });
});

describe("nkeyAuthenticator against a real nats-server", () => {
  const user = SigningKey.generate();
  let server: TestServer;
  let url: string;

  beforeAll(async () => {
    server = await startTestServer({ jetstream: false, config: { authorization: { users: [{ nkey: user.principal }] } } });
    url = server.url;
  });

  afterAll(async () => {
    await server?.stop();
  });

  it("an nkey user connects with it, and a key the server does not know is refused", async () => {
    const nc = await connect({ servers: url, authenticator: nkeyAuthenticator(user) });
    await nc.flush();
    await nc.close();

    const stranger = SigningKey.generate();
    await expect(
      connect({ servers: url, authenticator: nkeyAuthenticator(stranger), reconnect: false, maxReconnectAttempts: 0 }),
    ).rejects.toThrow(/authorization/i);
  });
});
