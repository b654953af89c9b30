import { readFileSync } from "node:fs";
import { Writable } from "node:stream";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { pino } from "pino";
import { ErrorCode, ServiceErrorCodeHeader, ServiceErrorHeader, UnibusError, decodeReply } from "@unibus/contracts";
import { EnvelopeHeader, SigningKey, envelopeSigningBytes, envelopeToHeaders, signEnvelope, toBase64Url } from "@unibus/crypto";
import { eventually, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { Access, defineService, endpoint, endpointFor } from "./definition.js";
import type { Caller, Role } from "./definition.js";
import { startService } from "./start-service.js";
import type { RunningService } from "./start-service.js";

interface KitTestTypes {
  "kit.echo.request": { text: string; count?: number };
  "kit.echo.reply": { text: string; caller: string; role?: string };
}

const schemaDir = new URL("../test/schemas/", import.meta.url);
const testSchemas = {
  "kit.echo.request": JSON.parse(readFileSync(new URL("echo.request.json", schemaDir), "utf8")),
  "kit.echo.reply": JSON.parse(readFileSync(new URL("echo.reply.json", schemaDir), "utf8")),
};

const S = {
  signed: "unibus.v1.kittest.echo",
  public: "unibus.v1.kittest.public",
  admin: "unibus.v1.kittest.admin",
  badReply: "unibus.v1.kittest.badreply",
  crash: "unibus.v1.kittest.crash",
  notFound: "unibus.v1.kittest.notfound",
  small: "unibus.v1.kittest.small",
} as const;

const echo = endpointFor<KitTestTypes>();
const callerName = (c: Caller): string => (c.anonymous ? "anonymous" : c.principal);

/** Every handler call, so a test can prove a rejected request never reached one. */
let calls: string[] = [];
/** The "state" the mutating endpoint changes. */
let stored: string[] = [];
let resolveRole: (principal: string) => Promise<Role | null> = async () => null;
const logLines: Array<Record<string, unknown>> = [];

const definition = defineService({
  name: "kit-test",
  version: "1.2.3",
  description: "service kit test service",
  schemas: testSchemas,
  endpoints: {
    echo: echo({
      subject: S.signed,
      request: "kit.echo.request",
      reply: "kit.echo.reply",
      mutates: true,
      access: Access.Signed,
      async handler(req, caller) {
        calls.push("echo");
        if (req.text === "taken") throw new UnibusError(ErrorCode.Conflict, "text_taken", "text already stored");
        stored.push(req.text);
        return { text: req.text, caller: callerName(caller) };
      },
    }),
    public: echo({
      subject: S.public,
      request: "kit.echo.request",
      reply: "kit.echo.reply",
      mutates: false,
      access: Access.Public,
      async handler(req, caller) {
        calls.push("public");
        return { text: req.text, caller: callerName(caller) };
      },
    }),
    admin: echo({
      subject: S.admin,
      request: "kit.echo.request",
      reply: "kit.echo.reply",
      mutates: false,
      access: Access.Admin,
      async handler(req, caller) {
        calls.push("admin");
        return caller.anonymous ? { text: req.text, caller: "anonymous" } : { text: req.text, caller: caller.principal, role: caller.role ?? "" };
      },
    }),
    badReply: echo({
      subject: S.badReply,
      request: "kit.echo.request",
      reply: "kit.echo.reply",
      mutates: false,
      access: Access.Public,
      async handler(req) {
        calls.push("badReply");
        return { text: req.text, caller: "x", extra: "not in the contract" } as never;
      },
    }),
    crash: echo({
      subject: S.crash,
      request: "kit.echo.request",
      reply: "kit.echo.reply",
      mutates: false,
      access: Access.Public,
      async handler() {
        calls.push("crash");
        throw new Error("db password hunter2 leaked in a stack");
      },
    }),
    notFound: echo({
      subject: S.notFound,
      request: "kit.echo.request",
      reply: "kit.echo.reply",
      mutates: false,
      access: Access.Public,
      async handler() {
        calls.push("notFound");
        throw new UnibusError(ErrorCode.NotFound, "room_not_found", "no such room");
      },
    }),
    small: echo({
      subject: S.small,
      request: "kit.echo.request",
      reply: "kit.echo.reply",
      mutates: false,
      access: Access.Public,
      maxPayloadBytes: 32,
      async handler(req, caller) {
        calls.push("small");
        return { text: req.text, caller: callerName(caller) };
      },
    }),
  },
});

let server: TestServer;
let nc: NatsConnection;
let running: RunningService;
let nonces: KV;
const key = SigningKey.generate();
const other = SigningKey.generate();
const enc = new TextEncoder();

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  // Replies go only to the signer's own inbox: this connection's inbox is `key`'s.
  nc = await server.connect({ inboxPrefix: `_INBOX.${key.principal}` });
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n")) if (line.trim() !== "") logLines.push(JSON.parse(line));
      done();
    },
  });
  running = await startService(nc, definition, {
    logger: pino({ level: "debug" }, sink),
    resolveRole: (p) => resolveRole(p),
  });
  nonces = await new Kvm(jetstream(nc)).open("nonces");
});

afterAll(async () => {
  await running?.stop();
  await server?.stop();
});

beforeEach(() => {
  calls = [];
  stored = [];
  resolveRole = async () => null;
});

interface SignOptions {
  signer?: SigningKey;
  /** Subject the envelope is signed for; default the subject it is sent to. */
  signedSubject?: string;
  timestamp?: number;
  /** Body the envelope is signed over; default the body sent. */
  signedBody?: Uint8Array;
}

function signedHeaders(subject: string, body: Uint8Array, o: SignOptions = {}) {
  const env = signEnvelope(o.signer ?? key, o.signedSubject ?? subject, o.signedBody ?? body, o.timestamp ?? Date.now());
  const h = natsHeaders();
  for (const [k, v] of Object.entries(envelopeToHeaders(env))) h.set(k, v);
  return h;
}

async function send(subject: string, body: string | Uint8Array, o: SignOptions & { unsigned?: boolean } = {}): Promise<Msg> {
  const data = typeof body === "string" ? enc.encode(body) : body;
  return o.unsigned ? nc.request(subject, data, { timeout: 5_000 }) : nc.request(subject, data, { timeout: 5_000, headers: signedHeaders(subject, data, o) });
}

/** Asserts an error reply carries the code in the micro headers and the JSON body. */
function expectError(msg: Msg, code: number, reason: string): { message: string; details?: Record<string, unknown> } {
  expect(msg.headers?.get(ServiceErrorCodeHeader)).toBe(String(code));
  expect(msg.headers?.get(ServiceErrorHeader)).toContain(reason);
  const body = msg.json<{ error: { code: number; reason: string; message: string; details?: Record<string, unknown> } }>();
  expect(body.error.code).toBe(code);
  expect(body.error.reason).toBe(reason);
  expect(() => decodeReply(msg)).toThrow(UnibusError);
  return body.error;
}

/** Headers of an envelope over `body` that reuses `nonce` (only the key's holder can make one). */
function signEnvelopeWithNonce(body: Uint8Array, nonce: string) {
  const timestamp = Date.now();
  const signature = toBase64Url(key.sign(envelopeSigningBytes(S.signed, timestamp, nonce, body)));
  const h = natsHeaders();
  for (const [k, v] of Object.entries(envelopeToHeaders({ signer: key.principal, timestamp, nonce, signature }))) h.set(k, v);
  return h;
}

async function nonceCount(): Promise<number> {
  let n = 0;
  for await (const _k of await nonces.keys()) n++;
  return n;
}

async function expectStillServing(): Promise<void> {
  const reply = decodeReply<{ text: string }>(await send(S.signed, JSON.stringify({ text: "alive" })));
  expect(reply.text).toBe("alive");
}

describe("a signed mutating endpoint", () => {
  it("serves a valid signed request and reports the signer as the caller", async () => {
    const reply = decodeReply<{ text: string; caller: string }>(await send(S.signed, JSON.stringify({ text: "hello" })));
    expect(reply).toEqual({ text: "hello", caller: key.principal });
    expect(calls).toEqual(["echo"]);
    expect(stored).toEqual(["hello"]);
  });

  const badInput: Array<[string, () => Promise<Msg>, number, string]> = [
    ["malformed JSON is 400 malformed_json", () => send(S.signed, "{not json"), 400, "malformed_json"],
    ["an empty body is 400 malformed_json", () => send(S.signed, ""), 400, "malformed_json"],
    ["invalid UTF-8 is 400 malformed_json", () => send(S.signed, new Uint8Array([0x7b, 0xff, 0x7d])), 400, "malformed_json"],
    ["a wrongly typed field is 400 schema_violation", () => send(S.signed, JSON.stringify({ text: 42 })), 400, "schema_violation"],
    ["an unknown field is 400 schema_violation", () => send(S.signed, JSON.stringify({ text: "a", admin: true })), 400, "schema_violation"],
    ["a missing required field is 400 schema_violation", () => send(S.signed, JSON.stringify({})), 400, "schema_violation"],
    ["a body over the default 64 KiB is 413", () => send(S.signed, JSON.stringify({ text: "x".repeat(64 * 1024) })), 413, "payload_too_large"],
    ["a claimed signer without a signature is 401 signature_missing", async () => {
      const data = enc.encode(JSON.stringify({ text: "a" }));
      const h = natsHeaders();
      h.set(EnvelopeHeader.signer, key.principal);
      return nc.request(S.signed, data, { headers: h, timeout: 5_000 });
    }, 401, "signature_missing"],
    ["a signature by another key is 401 signature_invalid", async () => {
      const data = enc.encode(JSON.stringify({ text: "a" }));
      const h = signedHeaders(S.signed, data, { signer: other });
      h.set(EnvelopeHeader.signer, key.principal);
      return nc.request(S.signed, data, { headers: h, timeout: 5_000 });
    }, 401, "signature_invalid"],
    ["a signature over another body is 401 signature_invalid", () => send(S.signed, JSON.stringify({ text: "a" }), { signedBody: enc.encode(JSON.stringify({ text: "b" })) }), 401, "signature_invalid"],
    ["a signature over another subject is 401 signature_invalid", () => send(S.signed, JSON.stringify({ text: "a" }), { signedSubject: S.admin }), 401, "signature_invalid"],
    ["a malformed timestamp header is 401 signature_invalid", async () => {
      const data = enc.encode(JSON.stringify({ text: "a" }));
      const h = signedHeaders(S.signed, data);
      h.set(EnvelopeHeader.timestamp, "soon");
      return nc.request(S.signed, data, { headers: h, timeout: 5_000 });
    }, 401, "signature_invalid"],
    ["a timestamp 31 s old is 401 timestamp_out_of_window", () => send(S.signed, JSON.stringify({ text: "a" }), { timestamp: Date.now() - 31_000 }), 401, "timestamp_out_of_window"],
    ["a timestamp 31 s ahead is 401 timestamp_out_of_window", () => send(S.signed, JSON.stringify({ text: "a" }), { timestamp: Date.now() + 31_000 }), 401, "timestamp_out_of_window"],
  ];

  for (const [name, request, code, reason] of badInput) {
    it(`${name}, the handler never runs and nothing changes`, async () => {
      const before = await nonceCount();
      const reply = await request();
      expectError(reply, code, reason);
      expect(calls).toEqual([]);
      expect(stored).toEqual([]);
      expect(await nonceCount()).toBe(before);
      await expectStillServing();
    });
  }

  it("names the offending field safely in a schema violation", async () => {
    const error = expectError(await send(S.signed, JSON.stringify({ text: "a", "evil\nkey<script>": 1 })), 400, "schema_violation");
    expect(error.details?.["path"]).toBe("/evil?key?script?");
    expect(error.message).not.toMatch(/[\n<>]/);
  });

  it("drops a replay sent to another inbox, unanswered, and runs the handler once", async () => {
    const data = enc.encode(JSON.stringify({ text: "once" }));
    const h = signedHeaders(S.signed, data);
    const first = await nc.request(S.signed, data, { headers: h, timeout: 5_000 });
    expect(decodeReply(first)).toEqual({ text: "once", caller: key.principal });
    // Whoever captured the signed request cannot collect a reply elsewhere.
    await expectDropped(S.signed, data, `_INBOX.${other.principal}.x`, h);
    // The handler ran for the first request and for expectDropped's positive control only.
    expect(stored).toEqual(["once", "alive"]);
  });

  describe("sent again by its signer (same nonce, same signed bytes, the signer's inbox)", () => {
    let own: NatsConnection;
    beforeAll(async () => {
      own = await server.connect({ inboxPrefix: `_INBOX.${key.principal}` });
    });
    afterAll(async () => {
      await own?.close();
    });

    it("returns the first reply and runs the handler once", async () => {
      const data = enc.encode(JSON.stringify({ text: "idem" }));
      const h = signedHeaders(S.signed, data);
      const first = await own.request(S.signed, data, { headers: h, timeout: 5_000 });
      const again = await own.request(S.signed, data, { headers: h, timeout: 5_000 });
      expect(decodeReply(first)).toEqual({ text: "idem", caller: key.principal });
      expect(decodeReply(again)).toEqual(decodeReply(first));
      expect(calls).toEqual(["echo"]);
      expect(stored).toEqual(["idem"]);
    });

    it("returns the first error reply again, without running the handler twice", async () => {
      const data = enc.encode(JSON.stringify({ text: "taken" }));
      const h = signedHeaders(S.signed, data);
      expectError(await own.request(S.signed, data, { headers: h, timeout: 5_000 }), 409, "text_taken");
      expectError(await own.request(S.signed, data, { headers: h, timeout: 5_000 }), 409, "text_taken");
      expect(calls).toEqual(["echo"]);
      expect(stored).toEqual([]);
    });

    it("the same nonce with another body is still 401 nonce_replayed", async () => {
      const data = enc.encode(JSON.stringify({ text: "one" }));
      const h = signedHeaders(S.signed, data);
      decodeReply(await own.request(S.signed, data, { headers: h, timeout: 5_000 }));
      const otherData = enc.encode(JSON.stringify({ text: "two" }));
      // Re-sign over the new body with the reused nonce: a valid envelope, a different request.
      const env = signEnvelopeWithNonce(otherData, h.get(EnvelopeHeader.nonce));
      const reply = await own.request(S.signed, otherData, { headers: env, timeout: 5_000 });
      expectError(reply, 401, "nonce_replayed");
      expect(stored).toEqual(["one"]);
    });

    it("a request whose first copy is still running is answered once it completes", async () => {
      const data = enc.encode(JSON.stringify({ text: "slow" }));
      const h = signedHeaders(S.signed, data);
      const [a, b] = await Promise.all([own.request(S.signed, data, { headers: h, timeout: 5_000 }), own.request(S.signed, data, { headers: h, timeout: 5_000 })]);
      expect(decodeReply(a)).toEqual({ text: "slow", caller: key.principal });
      expect(decodeReply(b)).toEqual(decodeReply(a));
      expect(stored).toEqual(["slow"]);
    });

    it("a record still in progress past the wait is 409 in_progress, never a second run", async () => {
      const data = enc.encode(JSON.stringify({ text: "stuck" }));
      const h = signedHeaders(S.signed, data);
      // A record with no outcome: the first copy's replica died mid-request.
      const first = await own.request(S.signed, data, { headers: h, timeout: 5_000 });
      const recordKey = `${key.principal}.${h.get(EnvelopeHeader.nonce)}`;
      const entry = await nonces.get(recordKey);
      const record = entry?.json<{ h: string }>();
      expect(record?.h).toMatch(/^[0-9a-f]{64}$/);
      await nonces.put(recordKey, JSON.stringify({ h: record?.h }));
      const again = await own.request(S.signed, data, { headers: h, timeout: 5_000 });
      expectError(again, 409, "in_progress");
      expect(decodeReply(first)).toEqual({ text: "stuck", caller: key.principal });
      expect(stored).toEqual(["stuck"]);
    });
  });

  it("records the nonce under signer.nonce in the nonces bucket, whose entries expire", async () => {
    const data = enc.encode(JSON.stringify({ text: "n" }));
    const h = signedHeaders(S.signed, data);
    decodeReply(await nc.request(S.signed, data, { headers: h, timeout: 5_000 }));
    const entry = await nonces.get(`${key.principal}.${h.get(EnvelopeHeader.nonce)}`);
    expect(entry?.operation).toBe("PUT");
    const status = await nonces.status();
    expect(status.ttl).toBeGreaterThanOrEqual(60_000);
  });
});

/**
 * Publishes `data` to `subject` with `reply`, then a valid request; once
 * that is answered the first was handled (the kit drops before any await),
 * so a reply that did not arrive by then never will.
 */
async function expectDropped(subject: string, data: Uint8Array, reply: string, h?: ReturnType<typeof natsHeaders>): Promise<void> {
  const seen: string[] = [];
  const sub = nc.subscribe(reply, { callback: (_e, m) => void seen.push(m.string()) });
  await nc.flush();
  const before = running.droppedRequests();
  nc.publish(subject, data, { reply, ...(h === undefined ? {} : { headers: h }) });
  await expectStillServing();
  await nc.flush();
  sub.unsubscribe();
  expect(seen).toEqual([]);
  expect(running.droppedRequests()).toBe(before + 1);
}

describe("reply subjects", () => {
  it("answers a signed request only on the signer's own inbox; another principal's inbox gets nothing and the handler never runs", async () => {
    const data = enc.encode(JSON.stringify({ text: "to other" }));
    await expectDropped(S.signed, data, `_INBOX.${other.principal}.x`, signedHeaders(S.signed, data));
    await expectDropped(S.signed, data, `$KV.users.${other.principal}`, signedHeaders(S.signed, data));
    await expectDropped(S.signed, data, `_INBOX.${key.principal}`, signedHeaders(S.signed, data));
    // Only the three positive controls ran.
    expect(stored).toEqual(["alive", "alive", "alive"]);
  });

  it("sends an error found before the envelope verifies only to the claimed signer's inbox", async () => {
    const bad = enc.encode("{not json");
    const h = signedHeaders(S.signed, bad, { signer: other });
    await expectDropped(S.signed, bad, `_INBOX.${key.principal}.y`, h);
    expectError(await nc.request(S.signed, bad, { headers: h, timeout: 5_000, noMux: true, reply: `_INBOX.${other.principal}.y` }), 400, "malformed_json");
  });

  it("never answers a request without a claimed signer on an endpoint that needs one", async () => {
    await expectDropped(S.signed, enc.encode(JSON.stringify({ text: "a" })), `_INBOX.${key.principal}.z`);
    const h = natsHeaders();
    h.set(EnvelopeHeader.signer, "*");
    await expectDropped(S.signed, enc.encode(JSON.stringify({ text: "a" })), "_INBOX.*.z", h);
  });

  it("answers a public endpoint on any inbox, and nothing outside inboxes", async () => {
    expect(decodeReply(await nc.request(S.public, enc.encode(JSON.stringify({ text: "hi" })), { timeout: 5_000, noMux: true, reply: "_INBOX.anyone.1" }))).toEqual({ text: "hi", caller: "anonymous" });
    await expectDropped(S.public, enc.encode(JSON.stringify({ text: "hi" })), "$KV.users.x");
  });
});

describe("a public endpoint", () => {
  it("serves an unsigned request with an anonymous caller", async () => {
    expect(decodeReply(await send(S.public, JSON.stringify({ text: "hi" }), { unsigned: true }))).toEqual({ text: "hi", caller: "anonymous" });
  });

  it("still validates the request", async () => {
    expectError(await send(S.public, JSON.stringify({ text: "hi", x: 1 }), { unsigned: true }), 400, "schema_violation");
    expect(calls).toEqual([]);
  });

  it("honours a per-endpoint payload limit", async () => {
    const error = expectError(await send(S.small, JSON.stringify({ text: "x".repeat(40) }), { unsigned: true }), 413, "payload_too_large");
    expect(error.details?.["limit"]).toBe(32);
    expect(calls).toEqual([]);
  });
});

describe("an admin endpoint", () => {
  it("runs the handler when resolveRole says admin, with the role on the caller", async () => {
    resolveRole = async (p) => (p === key.principal ? "admin" : null);
    expect(decodeReply(await send(S.admin, JSON.stringify({ text: "a" })))).toEqual({ text: "a", caller: key.principal, role: "admin" });
  });

  it("is 403 forbidden for a member", async () => {
    resolveRole = async () => "member";
    expectError(await send(S.admin, JSON.stringify({ text: "a" })), 403, "forbidden");
    expect(calls).toEqual([]);
  });

  it("is 403 forbidden for an unknown principal", async () => {
    expectError(await send(S.admin, JSON.stringify({ text: "a" })), 403, "forbidden");
    expect(calls).toEqual([]);
  });

  it("is 503 unavailable when the role lookup fails (fail closed)", async () => {
    resolveRole = async () => {
      throw new Error("users bucket unreachable");
    };
    const error = expectError(await send(S.admin, JSON.stringify({ text: "a" })), 503, "unavailable");
    expect(error.message).not.toContain("bucket");
    expect(calls).toEqual([]);
  });

  it("cannot be started without a role resolver", async () => {
    await expect(startService(nc, definition, { logger: pino({ level: "silent" }) })).rejects.toThrow(/resolveRole/);
  });
});

describe("handler failures", () => {
  it("a reply outside its schema is a 500 and the bad reply is not sent", async () => {
    const reply = await send(S.badReply, JSON.stringify({ text: "a" }), { unsigned: true });
    const error = expectError(reply, 500, "internal");
    expect(JSON.stringify(error)).not.toContain("not in the contract");
  });

  it("an unexpected throw is a 500 with a generic message; the detail goes only to the log", async () => {
    const error = expectError(await send(S.crash, JSON.stringify({ text: "a" }), { unsigned: true }), 500, "internal");
    expect(error.message).toBe("internal error");
    expect(logLines.some((l) => String(l["err"]).includes("hunter2"))).toBe(true);
  });

  it("a thrown UnibusError keeps its code and reason", async () => {
    const error = expectError(await send(S.notFound, JSON.stringify({ text: "a" }), { unsigned: true }), 404, "room_not_found");
    expect(error.message).toBe("no such room");
  });
});

describe("logging", () => {
  it("logs each request with stable keys and never its body or signature", async () => {
    logLines.length = 0;
    const secretText = "body-text-that-must-not-be-logged";
    decodeReply(await send(S.signed, JSON.stringify({ text: secretText })));
    expectError(await send(S.signed, JSON.stringify({ text: secretText }), { timestamp: 1 }), 401, "timestamp_out_of_window");
    const served = logLines.find((l) => l["msg"] === "request served");
    const rejected = logLines.find((l) => l["msg"] === "request rejected");
    expect(served).toMatchObject({ svc: "kit-test", op: "echo", principal: key.principal, code: 200 });
    expect(typeof served?.["ms"]).toBe("number");
    expect(rejected).toMatchObject({ svc: "kit-test", op: "echo", code: 401, reason: "timestamp_out_of_window" });
    const all = JSON.stringify(logLines);
    expect(all).not.toContain(secretText);
    expect(all).not.toContain(EnvelopeHeader.signature);
  });

  it("at info level a served request writes no line and a rejected one still does", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line));
        done();
      },
    });
    const subject = "unibus.v1.kitinfolevel.probe";
    const quiet = await startService(
      nc,
      defineService({
        name: "kit-info-level",
        version: "1.0.0",
        description: "kit logging at info level",
        endpoints: {
          probe: endpoint({
            subject,
            request: "healthz.status.request",
            reply: "healthz.status.reply",
            mutates: false,
            access: Access.Public,
            async handler() {
              return { status: "ok" as const, service: "kit-info-level", version: "1.0.0" };
            },
          }),
        },
      }),
      { logger: pino({ level: "info" }, sink) },
    );
    try {
      decodeReply(await nc.request(subject, "{}", { timeout: 5_000 }));
      expectError(await nc.request(subject, "not json", { timeout: 5_000 }), 400, "malformed_json");
      const rejected = await eventually(
        () => lines.filter((l) => l["msg"] === "request rejected"),
        (found) => found.length === 1,
      );
      expect(rejected[0]).toMatchObject({ svc: "kit-info-level", op: "probe", code: 400, reason: "malformed_json" });
      expect(typeof rejected[0]?.["ms"]).toBe("number");
      expect(lines.some((l) => l["msg"] === "request served")).toBe(false);
    } finally {
      await quiet.stop();
    }
  });
});
