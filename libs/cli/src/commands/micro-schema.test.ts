import { describe, expect, it } from "vitest";
import type { ServiceSchemaReply } from "@unibus/contracts";
import { findSchemaEndpoint } from "./micro.js";

const ep = (name: string, subject: string): ServiceSchemaReply["endpoints"][number] => ({
  name,
  subject,
  access: "signed",
  mutates: false,
  request: `${name}.request`,
  reply: `${name}.reply`,
  schemaVersion: "0",
  requestSchema: "{}",
  replySchema: "{}",
});
const reply: ServiceSchemaReply = {
  service: "blobs",
  version: "1.0.0",
  endpoints: [ep("put-begin", "unibus.v1.blobs.put.begin"), ep("put-chunk", "unibus.v1.blobs.put.chunk.r1"), ep("schema", "unibus.v1.blobs.schema")],
};
const find = (wanted: string): string | undefined => findSchemaEndpoint(reply, "unibus.v1.blobs.schema", wanted)?.name;

describe("micro schema ENDPOINT", () => {
  it("finds an endpoint by catalogue name, micro name, subject or subject tail", () => {
    expect(find("put.begin")).toBe("put-begin");
    expect(find("put-begin")).toBe("put-begin");
    expect(find("unibus.v1.blobs.put.begin")).toBe("put-begin");
  });

  it("finds a per-replica endpoint by its catalogue name, whose subject carries the replica token", () => {
    expect(find("put.chunk")).toBe("put-chunk");
    expect(find("put.chunk.r1")).toBe("put-chunk");
  });

  it("finds nothing for a name the service does not have", () => {
    expect(find("put.end")).toBeUndefined();
    expect(find("users.add")).toBeUndefined();
  });
});
