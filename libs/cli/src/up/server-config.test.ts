import { renderNatsConfig } from "@unibus/natsd";
import { describe, expect, it } from "vitest";
import { buildServerConfig, nkeyUsersAuthorization } from "./server-config.js";

const base = { host: "127.0.0.1", port: 4222, monitorPort: 8222, jetstreamDir: "/state/data" };

describe("server config for unibus up", () => {
  it("encrypts JetStream with a key read from $UNIBUS_JS_KEY, never a literal", () => {
    const text = renderNatsConfig(buildServerConfig({ ...base, authorization: nkeyUsersAuthorization(["UA", "UB"]) }));
    expect(text).toMatch(/cipher: "chachapoly"/);
    expect(text).toMatch(/key: \$UNIBUS_JS_KEY\n/);
    expect(text).toContain('store_dir: "/state/data"');
  });

  it("listens on loopback with monitoring on loopback", () => {
    const cfg = buildServerConfig({ ...base, authorization: nkeyUsersAuthorization([]) });
    expect(cfg.host).toBe("127.0.0.1");
    expect(cfg.port).toBe(4222);
    expect(cfg.http).toBe("127.0.0.1:8222");
  });

  it("admits exactly the listed nkey users (deduplicated)", () => {
    const cfg = buildServerConfig({ ...base, authorization: nkeyUsersAuthorization(["UA", "UB", "UA"]) });
    expect(cfg.authorization).toEqual({ users: [{ nkey: "UA" }, { nkey: "UB" }] });
  });

  it("takes an auth-callout fragment (accounts + authorization) in place of the nkey users", () => {
    const fragment = {
      accounts: { SYS: {}, UNIBUS: { jetstream: "enabled", users: [{ nkey: "UC" }] } },
      system_account: "SYS",
      authorization: { auth_callout: { issuer: "AISSUER", auth_users: ["UC"], account: "UNIBUS" } },
    };
    const cfg = buildServerConfig({ ...base, authorization: fragment });
    expect(cfg.authorization).toEqual(fragment.authorization);
    expect(cfg.accounts).toEqual(fragment.accounts);
    expect(cfg.jetstream).toBeDefined();
  });
});
