import { afterAll, beforeAll, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { ErrorCode, ErrorReason, Subjects, UnibusError, encodeErrorReply } from "@unibus/contracts";
import { EnvelopeHeader, SigningKey, envelopeFromHeaders, verifyEnvelope } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { connect } from "./client.js";
import type { UnibusClient } from "./client.js";

let server: TestServer;
let responder: NatsConnection;
let client: UnibusClient;
const key = SigningKey.generate();

beforeAll(async () => {
  server = await startTestServer({ jetstream: false });
  responder = await server.connect();
  responder.subscribe("t.echo", {
    callback: (_err, m) => {
      const envelope = envelopeFromHeaders((n) => m.headers?.get(n));
      m.respond(JSON.stringify({ valid: envelope !== undefined && verifyEnvelope(envelope, m.subject, m.data), signer: envelope?.signer, reply: m.reply, body: m.json() }));
    },
  });
  responder.subscribe("t.fail", {
    callback: (_err, m) => {
      const encoded = encodeErrorReply(new UnibusError(ErrorCode.Conflict, "user_exists", "principal is already on the allowlist"));
      m.respond(encoded.data);
    },
  });
  await responder.flush();
  client = await connect({ url: server.url, identity: key, name: "sdk-test" });
});

afterAll(async () => {
  await client?.close();
  await server?.stop();
});

it("request signs an envelope over subject and JSON body that the receiver can verify", async () => {
  const reply = await client.request<{ valid: boolean; signer: string; body: unknown }>("t.echo", { a: 1 });
  expect(reply).toMatchObject({ valid: true, signer: key.principal, body: { a: 1 } });
});

it("replies come back on the principal's own inbox, the only one the callout lets it subscribe to", async () => {
  const reply = await client.request<{ reply: string }>("t.echo", {});
  expect(reply.reply.startsWith(`_INBOX.${key.principal}.`)).toBe(true);
});

it("an error reply is thrown as a UnibusError with its code and reason", async () => {
  const err = await client.request("t.fail", {}).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(UnibusError);
  expect(err).toMatchObject({ code: ErrorCode.Conflict, reason: "user_exists" });
  expect(ErrorReason.Conflict).toBe("conflict");
});

it("typed helpers normalise a 64-hex principal to its U… nkey before sending", async () => {
  const seen = new Promise<unknown>((resolve) => {
    const sub = responder.subscribe("unibus.v1.membership.users.get", { max: 1 });
    void (async () => {
      for await (const m of sub) {
        resolve(m.json());
        m.respond(JSON.stringify({ error: { code: 404, reason: "user_not_found", message: "no such user" } }));
      }
    })();
  });
  await responder.flush();
  const other = SigningKey.generate();
  await expect(client.users.get(Buffer.from(other.publicKey).toString("hex"))).rejects.toMatchObject({ code: 404 });
  expect(await seen).toEqual({ principal: other.principal });
  expect(EnvelopeHeader.signer).toBe("Unibus-Signer");
});

it("a read whose reply is lost with a replaced connection is sent again on the new one, freshly signed", async () => {
  // The service drops the first copy, as a reply addressed to a kicked connection would be.
  const nonces: string[] = [];
  let firstSeen: () => void = () => undefined;
  const seenFirst = new Promise<void>((resolve) => (firstSeen = resolve));
  const sub = responder.subscribe(Subjects.membership.roomsLog, {
    callback: (_err, m) => {
      nonces.push(m.headers?.get(EnvelopeHeader.nonce) ?? "");
      if (nonces.length === 1) return firstSeen();
      m.respond(JSON.stringify({ roomId: "r", headSeq: 0, entries: [] }));
    },
  });
  await responder.flush();
  const reply = client.request<{ headSeq: number }>(Subjects.membership.roomsLog, { roomId: "r" }, { timeoutMs: 3_000 });
  await seenFirst;
  await client.nc.reconnect();
  await expect(reply).resolves.toMatchObject({ headSeq: 0 });
  expect(nonces).toHaveLength(2);
  expect(nonces[0]).not.toBe(nonces[1]);
  sub.unsubscribe();
});
