import { readFileSync } from "node:fs";
import { afterAll, beforeAll, expect, it } from "vitest";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { ErrorCode, ErrorReason, ServiceErrorCodeHeader, UnibusError, decodeBinaryFrame, decodeReply, encodeBinaryFrame } from "@unibus/contracts";
import { SigningKey, envelopeToHeaders, signEnvelope } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { Access, binaryReply, defineService, endpointFor } from "./definition.js";
import { startService } from "./start-service.js";
import type { RunningService } from "./start-service.js";

interface T {
  "kit.echo.request": { text: string; count?: number };
  "kit.echo.reply": { text: string; caller: string; role?: string };
}
const schemaDir = new URL("../test/schemas/", import.meta.url);
const schemas = {
  "kit.echo.request": JSON.parse(readFileSync(new URL("echo.request.json", schemaDir), "utf8")),
  "kit.echo.reply": JSON.parse(readFileSync(new URL("echo.reply.json", schemaDir), "utf8")),
};
const ep = endpointFor<T>();
const SUBJECT = "unibus.v1.kitbin.reverse";
const JSON_SUBJECT = "unibus.v1.kitbin.wrong";
const seen: Uint8Array[] = [];

const definition = defineService({
  name: "kit-binary-test",
  version: "1.0.0",
  description: "binary endpoint test",
  schemas,
  endpoints: {
    reverse: ep({
      subject: SUBJECT,
      request: "kit.echo.request",
      reply: "kit.echo.reply",
      mutates: false,
      access: Access.Signed,
      binary: true,
      maxPayloadBytes: 1024,
      async handler(req, caller, ctx) {
        seen.push(ctx.payload.slice());
        return binaryReply({ text: req.text, caller: caller.anonymous ? "-" : caller.principal }, ctx.payload.slice().reverse());
      },
    }),
    wrong: ep({
      subject: JSON_SUBJECT,
      request: "kit.echo.request",
      reply: "kit.echo.reply",
      mutates: false,
      access: Access.Signed,
      async handler(req) {
        // A JSON endpoint returning a binary reply is a bug the kit turns into a 500.
        return binaryReply({ text: req.text, caller: "-" }, new Uint8Array(1));
      },
    }),
  },
});

let server: TestServer;
let nc: NatsConnection;
let running: RunningService;
const key = SigningKey.generate();

beforeAll(async () => {
  server = await startTestServer({ jetstream: false });
  nc = await server.connect({ inboxPrefix: `_INBOX.${key.principal}` });
  running = await startService(nc, definition, { logger: pino({ level: "silent" }) });
});

afterAll(async () => {
  await running?.stop();
  await server?.stop();
});

async function send(subject: string, data: Uint8Array, signedData: Uint8Array = data) {
  const h = natsHeaders();
  for (const [n, v] of Object.entries(envelopeToHeaders(signEnvelope(key, subject, signedData)))) h.set(n, v);
  return nc.request(subject, data, { headers: h, timeout: 5_000 });
}

function errorOf(msg: { data: Uint8Array; headers?: { get(n: string): string } | undefined }): UnibusError {
  try {
    decodeReply(msg);
  } catch (err) {
    if (err instanceof UnibusError) return err;
  }
  throw new Error("expected an error reply");
}

it("a binary endpoint gets the JSON part schema-checked and the raw payload in ctx.payload, and replies with a frame", async () => {
  const msg = await send(SUBJECT, encodeBinaryFrame({ text: "hi" }, new Uint8Array([1, 2, 3])));
  expect(msg.headers?.get(ServiceErrorCodeHeader) ?? "").toBe("");
  const frame = decodeBinaryFrame(msg.data);
  expect(frame).not.toBeNull();
  expect(JSON.parse(new TextDecoder().decode(frame?.json))).toEqual({ text: "hi", caller: key.principal });
  expect([...(frame?.payload ?? [])]).toEqual([3, 2, 1]);
});

it("the signature covers the payload: a frame whose payload differs from what was signed is 401", async () => {
  const before = seen.length;
  const msg = await send(SUBJECT, encodeBinaryFrame({ text: "hi" }, new Uint8Array([9])), encodeBinaryFrame({ text: "hi" }, new Uint8Array([1])));
  expect(errorOf(msg)).toMatchObject({ code: ErrorCode.Unauthorized, reason: ErrorReason.SignatureInvalid });
  expect(seen.length).toBe(before);
});

it("a body that is not a binary frame, or whose JSON part violates the schema, is 400 before the handler", async () => {
  const before = seen.length;
  expect(errorOf(await send(SUBJECT, new Uint8Array([0, 0])))).toMatchObject({ code: ErrorCode.BadRequest, reason: ErrorReason.MalformedJson });
  expect(errorOf(await send(SUBJECT, new Uint8Array([0, 0, 1, 0, 1])))).toMatchObject({ code: ErrorCode.BadRequest, reason: ErrorReason.MalformedJson });
  expect(errorOf(await send(SUBJECT, encodeBinaryFrame({ nope: 1 }, new Uint8Array(1))))).toMatchObject({ code: ErrorCode.BadRequest, reason: ErrorReason.SchemaViolation });
  expect(errorOf(await send(SUBJECT, encodeBinaryFrame({ text: "x" }, new Uint8Array(2048))))).toMatchObject({ code: ErrorCode.PayloadTooLarge });
  expect(seen.length).toBe(before);
});

it("a JSON endpoint that returns a binary reply fails with a generic 500", async () => {
  const msg = await send(JSON_SUBJECT, new TextEncoder().encode(JSON.stringify({ text: "x" })));
  expect(errorOf(msg)).toMatchObject({ code: ErrorCode.Internal });
});
