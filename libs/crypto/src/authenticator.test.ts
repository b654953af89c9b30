import { connect } from "@nats-io/transport-node";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nkeyAuthenticator } from "./authenticator.js";
import { SigningKey, verifySignature } from "./ed25519.js";
import { utf8 } from "./encoding.js";
import { envelopeSigningBytes } from "./envelope.js";
import { ConnectNonceError, isMarkedStatement } from "./statement-marker.js";

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

  it("refuses, with connect_nonce_refused and no signature, a nonce that is not nats-server's base64url token", () => {
    const auth = nkeyAuthenticator(SigningKey.generate());
    // The unmarked bytes of an envelope are valid UTF-8 for this body: the old signing-oracle shape.
    const unmarked = envelopeSigningBytes("unibus.v1.users.add", 1, "00".repeat(16), utf8("{}")).subarray(1);
    const crafted = new TextDecoder("utf-8", { fatal: true }).decode(unmarked.subarray(0, 40));
    for (const nonce of [crafted, "short", "x".repeat(65), "has space in it ok", "ÿÿÿÿÿÿÿÿÿÿÿÿ", "abc/def+ghi=jkl"]) {
      let thrown: unknown;
      try {
        auth(nonce);
      } catch (err) {
        thrown = err;
      }
      expect(thrown, nonce).toBeInstanceOf(ConnectNonceError);
      expect((thrown as ConnectNonceError).code).toBe("connect_nonce_refused");
    }
  });

  it("signs bytes no statement can equal: a signed nonce never starts with the 0xFF statement marker", () => {
    const key = SigningKey.generate();
    const statement = envelopeSigningBytes("unibus.v1.users.add", 1, "00".repeat(16), utf8("{}"));
    expect(isMarkedStatement(statement)).toBe(true);
    const { sig } = nkeyAuthenticator(key)("UOdu24sAYzW8SmY");
    expect(isMarkedStatement(utf8("UOdu24sAYzW8SmY"))).toBe(false);
    expect(verifySignature(key.publicKey, statement, Buffer.from(sig, "base64"))).toBe(false);
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
