import { describe, expect, it } from "vitest";
import { formatChildLine, serviceOfLine } from "./child-log.js";

describe("service log lines in unibus up", () => {
  it("a pino JSON line becomes `name | time LEVEL msg fields`", () => {
    const line = JSON.stringify({ level: 30, time: Date.UTC(2026, 0, 2, 3, 4, 5, 6), pid: 1, hostname: "h", svc: "keys", msg: "service started", op: "start", endpoints: 3 });
    expect(formatChildLine("keys", line, 10)).toBe("keys       | 03:04:05.006 INFO  service started op=start endpoints=3");
  });

  it("quotes field values with spaces and maps error levels", () => {
    const line = JSON.stringify({ level: 50, time: 0, msg: "drain failed", err: "connection disconnected" });
    expect(formatChildLine("blobs", line, 5)).toBe('blobs | 00:00:00.000 ERROR drain failed err="connection disconnected"');
  });

  it("keeps non-JSON lines verbatim after the prefix", () => {
    expect(formatChildLine("healthz", "plain text {", 8)).toBe("healthz  | plain text {");
    expect(formatChildLine("healthz", "{broken json", 7)).toBe("healthz | {broken json");
  });

  it("a line of the one services process is named after its svc field, else the process", () => {
    expect(serviceOfLine(JSON.stringify({ level: 30, svc: "membership", msg: "x" }), "services")).toBe("membership");
    expect(serviceOfLine("plain text", "services")).toBe("services");
    expect(serviceOfLine("{broken", "services")).toBe("services");
    expect(serviceOfLine(JSON.stringify({ msg: "no svc" }), "services")).toBe("services");
    // A field that could forge another prefix (spaces, a bar) is not a name.
    expect(serviceOfLine(JSON.stringify({ svc: "keys | fake" }), "services")).toBe("services");
  });
});
