import { describe, expect, it } from "vitest";
import { ErrorCode, ErrorReason, ServiceErrorCodeHeader, ServiceErrorHeader, UnibusError, decodeReply, encodeErrorReply } from "./index.js";
import { SchemaRegistry } from "./validation.js";

function message(headers: Record<string, string>, data: Uint8Array) {
  return { data, headers: { get: (n: string) => headers[n] ?? "" } };
}

describe("error wire format", () => {
  it("an encoded error carries the code in micro headers and a body that matches common.error", () => {
    const err = new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "admin role required");
    const encoded = encodeErrorReply(err);
    expect(encoded.headers[ServiceErrorCodeHeader]).toBe("403");
    expect(encoded.headers[ServiceErrorHeader]).toBe("forbidden: admin role required");
    const body = JSON.parse(new TextDecoder().decode(encoded.data));
    expect(body).toEqual({ error: { code: 403, reason: "forbidden", message: "admin role required" } });
    expect(new SchemaRegistry().validator("common.error")(body)).toEqual({ ok: true });
  });

  it("a message cannot inject a header line", () => {
    const encoded = encodeErrorReply(new UnibusError(ErrorCode.BadRequest, "x", "a\r\nEvil: 1"));
    expect(encoded.headers[ServiceErrorHeader]).not.toMatch(/[\r\n]/);
  });

  it("decodeReply returns the body of a success reply", () => {
    expect(decodeReply(message({}, new TextEncoder().encode('{"status":"ok"}')))).toEqual({ status: "ok" });
  });

  it("decodeReply throws the UnibusError an error reply carries", () => {
    const encoded = encodeErrorReply(new UnibusError(ErrorCode.PayloadTooLarge, ErrorReason.PayloadTooLarge, "too big", { details: { limit: 10 } }));
    expect(() => decodeReply(message({ ...encoded.headers }, encoded.data))).toThrow(
      expect.objectContaining({ name: "UnibusError", code: 413, reason: "payload_too_large", details: { limit: 10 } }),
    );
  });

  it("decodeReply throws on a header-only micro error from a non-unibus service", () => {
    const h = { [ServiceErrorCodeHeader]: "503", [ServiceErrorHeader]: "no quorum" };
    expect(() => decodeReply(message(h, new Uint8Array()))).toThrow(expect.objectContaining({ code: 503, reason: "unavailable", message: "no quorum" }));
  });

  it("decodeReply rejects a success reply that is not JSON", () => {
    expect(() => decodeReply(message({}, new TextEncoder().encode("nope")))).toThrow(expect.objectContaining({ reason: "malformed_reply" }));
  });

  it("UnibusError keeps its cause for the log, out of the reply", () => {
    const cause = new Error("kv timeout on node-2");
    const err = new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause });
    expect(err.cause).toBe(cause);
    expect(JSON.stringify(err.toReply())).not.toContain("node-2");
  });
});
