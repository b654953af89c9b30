import { describe, expect, it } from "vitest";
import { pino } from "pino";
import { ErrorReason, UnibusError } from "@unibus/contracts";
import type { ValidateFn } from "@unibus/contracts";
import { Access, defineService, ServiceDefinitionError } from "./definition.js";
import type { Caller, EndpointSpec } from "./definition.js";
import { runPipeline } from "./request-pipeline.js";

const spec = (access: Access, mutates: boolean, handler: EndpointSpec["handler"] = async () => ({})): EndpointSpec => ({
  subject: "unibus.v1.kittest.handshake",
  request: "x",
  reply: "y",
  mutates,
  access,
  maxPayloadBytes: 64,
  handler,
});

describe("Access.Handshake", () => {
  it("may mutate, where a public endpoint may not", () => {
    const def = (access: Access) => defineService({ name: "t", version: "1.0.0", description: "t", endpoints: { e: spec(access, true) } });
    expect(() => def(Access.Public)).toThrow(ServiceDefinitionError);
    expect(def(Access.Handshake).endpoints["e"]?.access).toBe("handshake");
  });

  it("runs the handler without an envelope, anonymous, but only after size, JSON and schema checks", async () => {
    const seen: Caller[] = [];
    const validate: ValidateFn = (v) => (typeof v === "object" && v !== null && "ok" in v ? { ok: true } : { ok: false, path: "/ok", message: "required" });
    const p = {
      name: "e",
      spec: spec(Access.Handshake, true, async (_req, caller) => {
        seen.push(caller);
        return {};
      }),
      validateRequest: validate,
      validateReply: () => ({ ok: true }) as const,
      nonces: undefined,
      resolveRole: undefined,
      now: Date.now,
      logger: pino({ level: "silent" }),
    };
    const run = (body: string) => runPipeline(p, { subject: p.spec.subject, data: new TextEncoder().encode(body) }, {});
    await expect(run('{"ok":1}')).resolves.toBeInstanceOf(Uint8Array);
    expect(seen).toEqual([{ anonymous: true }]);
    for (const [body, reason] of [["{", ErrorReason.MalformedJson], ["{}", ErrorReason.SchemaViolation], ["x".repeat(65), ErrorReason.PayloadTooLarge]] as const) {
      await expect(run(body)).rejects.toSatisfy((e: unknown) => e instanceof UnibusError && e.reason === reason);
    }
    expect(seen).toHaveLength(1);
  });
});
