import { describe, expect, it } from "vitest";
import { EndpointCatalogue, ReadOnlySubjects, Subjects, schemas } from "@unibus/contracts";
import type { CatalogueEntry } from "@unibus/contracts";
import { Access, ServiceDefinitionError, endpointTable, handles } from "./definition.js";
import type { EndpointTable } from "./definition.js";

const status = handles("healthz", "status", { handler: async () => ({ status: "ok" as const, service: "healthz", version: "1.0.0" }) });
const posture = handles("healthz", "posture", {
  handler: async () => {
    throw new Error("not called");
  },
});
const table: EndpointTable<"healthz"> = {
  status: { access: Access.Public, mutates: false, impl: status },
  posture: { access: Access.Admin, mutates: false, impl: posture },
};

/** Bypasses the table's type, as a drifted or hand-built table would. */
const loose = (rows: Record<string, unknown>): EndpointTable<"healthz"> => rows as unknown as EndpointTable<"healthz">;

describe("endpointTable", () => {
  it("derives subject, schema ids and micro name from the catalogue name", () => {
    const eps = endpointTable("keys", {
      "agreement_keys.register": { access: Access.Signed, mutates: true, impl: handles("keys", "agreement_keys.register", { handler: async () => ({ principal: "U", agreementKey: "k", revision: 1 }) }) },
      "agreement_keys.list": { access: Access.Signed, mutates: false, impl: handles("keys", "agreement_keys.list", { handler: async () => ({ roomId: "r", members: [] }) }) },
      "epochs.publish": { access: Access.Signed, mutates: true, impl: handles("keys", "epochs.publish", { maxPayloadBytes: 1000, handler: async () => ({ roomId: "r", epoch: 1, shares: 0, revision: 1 }) }) },
      "epochs.list": { access: Access.Signed, mutates: false, impl: handles("keys", "epochs.list", { handler: async () => ({ roomId: "r", epochs: [] }) }) },
      "shares.get": { access: Access.Signed, mutates: false, impl: handles("keys", "shares.get", { handler: async () => ({}) as never }) },
    });
    expect(Object.keys(eps).sort()).toEqual(["agreement_keys-list", "agreement_keys-register", "epochs-list", "epochs-publish", "shares-get"]);
    const publish = eps["epochs-publish"]!;
    expect(publish).toMatchObject({ subject: "unibus.v1.keys.epochs.publish", request: "keys.epochs.publish.request", reply: "keys.epochs.publish.reply", access: "signed", mutates: true, maxPayloadBytes: 1000 });
    expect(publish.subject).toBe(Subjects.keys.epochsPublish);
    for (const spec of Object.values(eps)) {
      expect(schemas[spec.request as keyof typeof schemas]).toBeDefined();
      expect(schemas[spec.reply as keyof typeof schemas]).toBeDefined();
    }
  });

  it("every catalogued JSON endpoint has both schema files, a binary one none, and Subjects lists exactly the catalogue", () => {
    for (const [service, endpoints] of Object.entries(EndpointCatalogue)) {
      for (const [name, entry] of Object.entries(endpoints as Record<string, CatalogueEntry>)) {
        const check = entry.wire === "binary" ? "toBeUndefined" : "toBeDefined";
        expect(schemas[`${service}.${name}.request` as keyof typeof schemas], `${service}.${name}.request`)[check]();
        expect(schemas[`${service}.${name}.reply` as keyof typeof schemas], `${service}.${name}.reply`)[check]();
      }
    }
    expect(Object.entries(EndpointCatalogue.replica).filter(([, e]) => (e as CatalogueEntry).wire === "binary").map(([n]) => n)).toEqual(["handshake.hello", "handshake.finish"]);
    expect(Object.values(Subjects.keys).sort()).toEqual(["unibus.v1.keys.>", ...Object.keys(EndpointCatalogue.keys).map((n) => `unibus.v1.keys.${n}`)].sort());
  });

  it("the subjects a client may resend are exactly the catalogue's resend endpoints, none of them mutating", () => {
    const resend: string[] = [];
    for (const [service, endpoints] of Object.entries(EndpointCatalogue)) {
      for (const [name, entry] of Object.entries(endpoints as Record<string, CatalogueEntry>)) {
        if (entry.resend !== true) continue;
        expect(entry.mutates, `${service}.${name}`).toBe(false);
        resend.push(`unibus.v1.${service}.${name}`);
      }
    }
    expect([...ReadOnlySubjects].sort()).toEqual(resend.sort());
    expect(ReadOnlySubjects.has(Subjects.keys.sharesGet)).toBe(true);
    // A read that opens a session is not resendable: a second one would open another.
    expect(ReadOnlySubjects.has(Subjects.blobs.getBegin)).toBe(false);
  });

  it("a table that matches the catalogue gives one spec per endpoint", () => {
    const eps = endpointTable("healthz", table);
    expect(eps["status"]).toMatchObject({ subject: "unibus.v1.healthz.status", access: "public", mutates: false });
    expect(eps["posture"]).toMatchObject({ subject: "unibus.v1.healthz.posture", access: "admin" });
  });

  it("refuses a table with another access or mutation than the catalogue: a drifted row must not serve a looser endpoint", () => {
    expect(() => endpointTable("healthz", loose({ ...table, posture: { access: Access.Signed, mutates: false, impl: posture } }))).toThrow(/posture: table says signed\/read-only, the catalogue admin\/read-only/);
    expect(() => endpointTable("healthz", loose({ ...table, status: { access: Access.Public, mutates: true, impl: status } }))).toThrow(ServiceDefinitionError);
  });

  it("refuses a table that leaves out a catalogued endpoint or adds one the catalogue does not know", () => {
    expect(() => endpointTable("healthz", loose({ status: table.status }))).toThrow(/posture: catalogued but missing/);
    expect(() => endpointTable("healthz", loose({ ...table, extra: table.status }))).toThrow(/extra is not in the catalogue/);
  });

  it("a subset table may leave endpoints out, but its rows must still match the catalogue", () => {
    expect(Object.keys(endpointTable("healthz", { status: table.status }, { subset: true }))).toEqual(["status"]);
    expect(() => endpointTable("healthz", { status: { access: Access.Public, mutates: true, impl: status } } as never, { subset: true })).toThrow(ServiceDefinitionError);
    expect(() => endpointTable("healthz", loose({ extra: table.status }), { subset: true })).toThrow(/extra is not in the catalogue/);
  });

  it("a binary catalogue endpoint is never served through the JSON table: a row for it is refused, and a table without it is whole", () => {
    const impl = { handler: async () => ({}) as never };
    expect(() => endpointTable("replica", loose({ "handshake.hello": { access: Access.Handshake, mutates: false, impl } }) as never, { subset: true })).toThrow(/binary, served as a raw endpoint/);
    const eps = endpointTable("replica", loose({ info: { access: Access.Public, mutates: false, impl } }) as never, { subset: true });
    expect(Object.keys(eps)).toEqual(["info"]);
  });

  it("a per-replica endpoint listens on <subject>.<replica> and needs a safe replica token", () => {
    const impl = { handler: async () => ({}) as never };
    const rows = loose({
      "put.begin": { access: Access.Signed, mutates: true, impl },
      "put.chunk": { access: Access.Signed, mutates: false, impl },
      "put.end": { access: Access.Signed, mutates: true, impl },
      "get.begin": { access: Access.Signed, mutates: false, impl },
      "get.chunk": { access: Access.Signed, mutates: false, impl },
    }) as unknown as EndpointTable<"blobs">;
    const eps = endpointTable("blobs", rows, { replica: "r1" });
    expect(eps["put-chunk"]?.subject).toBe("unibus.v1.blobs.put.chunk.r1");
    expect(eps["put-begin"]?.subject).toBe("unibus.v1.blobs.put.begin");
    expect(() => endpointTable("blobs", rows)).toThrow(/needs a replica token/);
    expect(() => endpointTable("blobs", rows, { replica: "a.>" })).toThrow(/needs a replica token/);
  });
});
