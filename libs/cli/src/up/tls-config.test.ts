import { renderNatsConfig } from "@unibus/natsd";
import { tlsOption } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import { describe, expect, it } from "vitest";
import { connectToBus } from "../connection.js";
import { buildServerConfig } from "./server-config.js";

const base = { host: "127.0.0.1", port: 4222, monitorPort: undefined, jetstreamDir: "/state/data", authorization: {} };

describe("client TLS", () => {
  it("puts a tls block on the client port only when asked", () => {
    expect(renderNatsConfig(buildServerConfig(base))).not.toMatch(/\btls\b/);
    const text = renderNatsConfig(buildServerConfig({ ...base, tls: { certFile: "/h/tls/server.pem", keyFile: "/h/tls/server.key" } }));
    expect(text).toMatch(/tls: \{\n\s+cert_file: "\/h\/tls\/server.pem"\n\s+key_file: "\/h\/tls\/server.key"\n\s*\}/);
  });

  it("the SDK requires TLS for tls:// URLs or a given CA, and never for nats:// alone", () => {
    expect(tlsOption(["nats://127.0.0.1:4222"], undefined)).toEqual({});
    expect(tlsOption(["nats://a:4222", "TLS://b:4222"], undefined)).toEqual({ tls: {} });
    expect(tlsOption(["nats://127.0.0.1:4222"], { caFile: "/ca.pem" })).toEqual({ tls: { caFile: "/ca.pem" } });
  });

  it("a tls:// URL is never used in plaintext: a server without TLS is refused", async () => {
    const server = await startTestServer();
    try {
      const tlsUrl = server.url.replace(/^nats:/, "tls:");
      await expect(connectToBus({ server: tlsUrl, identityPath: undefined, source: "test" })).rejects.toThrow();
      // Control: the same server over nats:// connects.
      const nc = await connectToBus({ server: server.url, identityPath: undefined, source: "test" });
      await nc.close();
    } finally {
      await server.stop();
    }
  });
});
