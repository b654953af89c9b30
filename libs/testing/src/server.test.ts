import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { NatsServerStartError, envRef } from "@unibus/natsd";
import { afterEach, describe, expect, it } from "vitest";
import { startTestServer } from "./server.js";
import type { TestServer } from "./server.js";

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

async function start(opts?: Parameters<typeof startTestServer>[0]): Promise<TestServer> {
  const server = await startTestServer(opts);
  servers.push(server);
  return server;
}

async function reconnectOf(nc: NatsConnection): Promise<void> {
  for await (const s of nc.status()) if (s.type === "reconnect") return;
}

describe("startTestServer", () => {
  it("a single server with JetStream stores and returns a KV value", async () => {
    const server = await start();
    const nc = await server.connect();
    const kv = await new Kvm(nc).create("settings");
    await kv.put("theme", "dark");
    expect((await kv.get("theme"))?.string()).toBe("dark");
  });

  it("an env-substituted JetStream key never appears in the config file, and encrypted JetStream works", async () => {
    const secret = "Ktestkey0123456789abcdef";
    const server = await start({
      config: { jetstream: { cipher: "chachapoly", key: envRef("UNIBUS_JS_KEY") } },
      env: { UNIBUS_JS_KEY: secret },
    });
    const file = await readFile(server.configPath, "utf8");
    expect(file).toContain("key: $UNIBUS_JS_KEY");
    expect(file).not.toContain(secret);
    const kv = await new Kvm(await server.connect()).create("secrets");
    await kv.put("k", "plaintext-marker");
    expect((await kv.get("k"))?.string()).toBe("plaintext-marker");
  });

  it("passes arbitrary accounts and authorization blocks through to the server", async () => {
    const server = await start({
      config: {
        accounts: {
          APP: { jetstream: true, users: [{ user: "app", password: "app-pw" }] },
          SYS: { users: [{ user: "sys", password: "sys-pw" }] },
        },
        system_account: "SYS",
      },
    });
    await expect(server.connect({ user: "app", pass: "wrong" })).rejects.toThrow(/Authorization/i);
    const nc = await server.connect({ user: "app", pass: "app-pw" });
    const kv = await new Kvm(nc).create("app_bucket");
    await kv.put("a", "1");
    expect((await kv.get("a"))?.string()).toBe("1");
  });

  it("a bad config fails fast with the server log tail in the error and leaves no temp dir", async () => {
    const t0 = Date.now();
    const err = await startTestServer({ config: { jetstream: { max_mem_store: "lots" } } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NatsServerStartError);
    expect((err as Error).message).toMatch(/nats-server log tail/);
    expect((err as NatsServerStartError).logTail).toMatch(/max_mem_store|lots|parse|invalid/i);
    expect(Date.now() - t0).toBeLessThan(5000);
    const dir = /config (\/\S+)\/nats-server\.conf/.exec((err as Error).message)?.[1];
    expect(dir).toBeDefined();
    expect(existsSync(dir ?? "/")).toBe(false);
  });

  it("restart() keeps port and data, and a tracked connection reconnects", async () => {
    const server = await start();
    const nc = await server.connect({ maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    const kv = await new Kvm(nc).create("durable");
    await kv.put("x", "before");
    const port = server.port;
    const pid = server.pid;
    const reconnected = reconnectOf(nc);
    await server.restart();
    expect(server.port).toBe(port);
    expect(server.pid).not.toBe(pid);
    await reconnected;
    expect((await kv.get("x"))?.string()).toBe("before");
  });

  it("stop() closes tracked connections, kills the server and removes its temp dir", async () => {
    const server = await startTestServer();
    const nc = await server.connect();
    const { dir, pid } = server;
    await server.stop();
    expect(nc.isClosed()).toBe(true);
    expect(existsSync(dir)).toBe(false);
    expect(() => process.kill(pid, 0)).toThrow();
  });
});
