import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { envRef } from "./config.js";
import { NatsServerStartError } from "./errors.js";
import { startNatsServer } from "./process.js";
import type { NatsServerProcess } from "./process.js";

let root: string;
const started: NatsServerProcess[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "natsd-process-"));
});
afterEach(async () => {
  await Promise.all(started.splice(0).map((s) => s.stop()));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function start(name: string, config: Parameters<typeof startNatsServer>[0]["config"], env?: Record<string, string>) {
  const server = await startNatsServer({ config, dir: join(root, name), env, name });
  started.push(server);
  return server;
}

describe("startNatsServer", () => {
  it("starts on a free loopback port and reports url, ports and pid", async () => {
    const server = await start("basic", { host: "127.0.0.1", http_port: -1 });
    expect(server.url).toBe(`nats://127.0.0.1:${server.port}`);
    expect(server.port).toBeGreaterThan(0);
    expect(server.monitorPort).toBeGreaterThan(0);
    expect(server.pid).toBeGreaterThan(0);
    const varz = (await (await fetch(`http://127.0.0.1:${server.monitorPort}/varz`)).json()) as { port: number };
    expect(varz.port).toBe(server.port);
  });

  it("keeps the dir 0700 and the config, log, pid and ports files 0600", async () => {
    const server = await start("mode", { host: "127.0.0.1" });
    expect((await stat(server.dir)).mode & 0o777).toBe(0o700);
    const files = [server.configPath, server.logPath, join(server.dir, "nats-server.pid"), join(server.dir, `nats-server_${server.pid}.ports`)];
    for (const file of files) expect((await stat(file)).mode & 0o777, file).toBe(0o600);
    // The log is the server's own (it appended to the file created 0600), not an empty placeholder.
    expect(await readFile(server.logPath, "utf8")).toMatch(/Server is ready/);
  });

  it("round-trips quoted strings with quotes and $ literally (no substitution inside quotes)", async () => {
    const serverName = 'n"1$HOME\\x';
    const server = await start("strings", { host: "127.0.0.1", http_port: -1, server_name: serverName });
    const varz = (await (await fetch(`http://127.0.0.1:${server.monitorPort}/varz`)).json()) as { server_name: string };
    expect(varz.server_name).toBe(serverName);
  });

  it("passes a secret only through the environment: not in the config file, argv or log", async () => {
    const secret = "Kx9secretvalue42";
    const server = await start(
      "secret",
      { host: "127.0.0.1", jetstream: { store_dir: join(root, "secret", "js"), cipher: "chachapoly", key: envRef("UNIBUS_JS_KEY") } },
      { UNIBUS_JS_KEY: secret },
    );
    expect(await readFile(server.configPath, "utf8")).not.toContain(secret);
    expect(await readFile(`/proc/${server.pid}/cmdline`, "utf8")).not.toContain(secret);
    expect(await readFile(server.logPath, "utf8")).not.toContain(secret);
  });

  it("stop() ends the process and resolves exited", async () => {
    const server = await start("stop", { host: "127.0.0.1" });
    await server.stop();
    await expect(server.exited).resolves.toBeDefined();
    expect(() => process.kill(server.pid, 0)).toThrow();
    await server.stop();
  });

  it("restart() keeps the dir and config and serves again", async () => {
    const first = await start("restart", { host: "127.0.0.1" });
    const second = await first.restart();
    started.push(second);
    expect(second.dir).toBe(first.dir);
    expect(second.pid).not.toBe(first.pid);
    expect(second.port).toBeGreaterThan(0);
  });

  it("a config the server rejects fails fast with the server's message in the error", async () => {
    const t0 = Date.now();
    const err = await start("bad", { host: "127.0.0.1", no_such_field: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NatsServerStartError);
    expect((err as NatsServerStartError).logTail).toMatch(/unknown field "no_such_field"/);
    expect((err as Error).message).toMatch(/exited during startup/);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it("a missing binary fails with a start error", async () => {
    await expect(startNatsServer({ config: {}, dir: join(root, "nobin"), bin: join(root, "no-such-bin") })).rejects.toThrow(
      /could not run/,
    );
  });
});
