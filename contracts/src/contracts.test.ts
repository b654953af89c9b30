import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { SchemaRegistry, ServiceName, SubjectPrefix, Subjects, schemas } from "./index.js";

const root = fileURLToPath(new URL("../../", import.meta.url));

describe("contracts", () => {
  it("the generated files match the schemas (contracts:check)", () => {
    expect(() => execFileSync("npx", ["tsx", "contracts/scripts/generate.ts", "--check"], { cwd: root, stdio: "pipe" })).not.toThrow();
  });

  it("an audit.denials reply carries records exactly as the callout stores them", () => {
    const { $schema: _s, $id: _i, title: _t, ...record } = schemas["audit.denial.record"] as Record<string, unknown>;
    const reply = schemas["membership.audit.denials.reply"] as { properties: { denials: { items: unknown } } };
    expect(reply.properties.denials.items).toEqual(record);
  });

  it("every embedded schema compiles", () => {
    const registry = new SchemaRegistry();
    for (const id of Object.keys(schemas)) expect(() => registry.validator(id)).not.toThrow();
  });

  it("every request subject follows unibus.v1.<service>.<endpoint>", () => {
    for (const [service, subjects] of Object.entries(Subjects)) {
      if (service === "authCallout") continue;
      for (const [name, subject] of Object.entries(subjects)) {
        if (name === "all") expect(subject).toMatch(new RegExp(`^${SubjectPrefix.replace(".", "\\.")}\\.[a-z]+\\.>$`));
        else expect(subject).toMatch(/^unibus\.v1\.[a-z]+(\.[a-z][a-z_]*)+$/);
      }
    }
    expect(Object.values(ServiceName)).toContain("replica-gateway");
  });

  it("a request validator reports the path and rejects unknown fields", () => {
    const validate = new SchemaRegistry().validator("healthz.status.reply");
    expect(validate({ status: "ok", service: "healthz", version: "0.1.0" })).toEqual({ ok: true });
    expect(validate({ status: "ok", service: "healthz", version: "0.1.0", extra: 1 })).toEqual({ ok: false, path: "/extra", message: "unknown field" });
    expect(validate({ status: "fine", service: "healthz", version: "0.1.0" })).toMatchObject({ ok: false, path: "/status" });
  });
});
