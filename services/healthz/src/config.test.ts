import { describe, expect, it } from "vitest";
import { loadHealthzOptions } from "./config.js";
import { parseListenAddress } from "./http.js";

describe("healthz configuration", () => {
  it("defaults to loopback with a free port, no monitoring and an undeclared (unknown) cipher", () => {
    expect(loadHealthzOptions({})).toEqual({ http: { host: "127.0.0.1", port: 0 }, monitorUrls: [], atRest: { encrypted: null, cipher: null } });
  });

  it("reads the bind address, monitoring URLs and the declared cipher", () => {
    const opts = loadHealthzOptions({ UNIBUS_HEALTHZ_LISTEN: "0.0.0.0:8080", UNIBUS_NATS_MONITOR_URLS: "http://nats-1:8222/, http://nats-2:8222", UNIBUS_JS_CIPHER: "chachapoly" });
    expect(opts).toEqual({ http: { host: "0.0.0.0", port: 8080 }, monitorUrls: ["http://nats-1:8222", "http://nats-2:8222"], atRest: { encrypted: true, cipher: "chachapoly" } });
    expect(loadHealthzOptions({ UNIBUS_JS_CIPHER: "none" }).atRest).toEqual({ encrypted: false, cipher: null });
    expect(parseListenAddress("[::1]:9000")).toEqual({ host: "::1", port: 9000 });
  });

  it.each([
    [{ UNIBUS_HEALTHZ_LISTEN: "8080" }, /UNIBUS_HEALTHZ_LISTEN/],
    [{ UNIBUS_HEALTHZ_LISTEN: "127.0.0.1:70000" }, /UNIBUS_HEALTHZ_LISTEN/],
    [{ UNIBUS_NATS_MONITOR_URLS: "nats-1:8222" }, /UNIBUS_NATS_MONITOR_URLS/],
    [{ UNIBUS_NATS_MONITOR_URLS: "http://nats-1:8222/varz" }, /UNIBUS_NATS_MONITOR_URLS/],
    [{ UNIBUS_JS_CIPHER: "rot13" }, /UNIBUS_JS_CIPHER/],
  ])("refuses %j, naming the variable", (env, message) => {
    expect(() => loadHealthzOptions(env)).toThrow(message);
  });
});
