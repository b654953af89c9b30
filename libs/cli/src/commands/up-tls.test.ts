import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { freeLoopbackPort, spawnWatched } from "@unibus/testing";
import type { WatchedProcess } from "@unibus/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseEnvFile } from "../home.js";
import { runCli } from "../router.js";
import { recordingIo } from "../test-io.js";

const BIN = resolve(fileURLToPath(new URL(".", import.meta.url)), "../../bin/unibus.mjs");

/** What the server answers a client that skips TLS: its first line after CONNECT. */
function plaintextAttempt(port: number): Promise<string> {
  return new Promise((done, fail) => {
    const socket = tcpConnect({ host: "127.0.0.1", port });
    let text = "";
    socket.setTimeout(10_000, () => {
      socket.destroy();
      fail(new Error(`no answer; got ${JSON.stringify(text)}`));
    });
    socket.on("data", (d: Buffer) => {
      text += d.toString();
      if (text.startsWith("INFO ") && text.includes("\r\n") && !text.includes("CONNECT-SENT")) {
        text += "CONNECT-SENT";
        socket.write('CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n');
      }
      if (/-ERR|PONG/.test(text)) {
        socket.destroy();
        done(text);
      }
    });
    socket.on("close", () => done(text));
    socket.on("error", () => done(text));
  });
}

describe("unibus up --tls", () => {
  let tmp: string;
  let env: NodeJS.ProcessEnv;
  let up: WatchedProcess;
  let port: number;

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "unibus-up-tls-"));
    port = await freeLoopbackPort();
    env = { ...process.env, UNIBUS_HOME: join(tmp, "home"), UNIBUS_PORT: String(port), UNIBUS_MONITOR_PORT: String(await freeLoopbackPort()) };
    delete env.UNIBUS_URL;
    delete env.UNIBUS_IDENTITY;
    delete env.UNIBUS_TLS_CA;
    up = spawnWatched(process.execPath, [BIN, "up", "--tls"], { env, label: "unibus up --tls" });
    await up.waitFor("stdout", /admin #0 (exists|\S+ [A-Z0-9]+|[A-Z0-9]+)|bootstrapped admin #0/, 120_000);
  }, 150_000);

  afterAll(async () => {
    up?.child.kill("SIGINT");
    await up?.exitCode(30_000).catch(() => up.child.kill("SIGKILL"));
    await rm(tmp, { recursive: true, force: true });
  }, 40_000);

  it("writes a tls:// URL and its CA; the server key is 0600", async () => {
    const file = parseEnvFile(await readFile(join(tmp, "home", "env"), "utf8"));
    expect(file.UNIBUS_URL).toBe(`tls://127.0.0.1:${port}`);
    expect(file.UNIBUS_TLS_CA).toBe(join(tmp, "home", "tls", "ca.pem"));
    expect((await stat(join(tmp, "home", "tls", "server.key"))).mode & 0o777).toBe(0o600);
    await expect(stat(join(tmp, "home", "tls", "ca.key"))).rejects.toThrow();
    expect(up.output()).toContain(`bus URL:         tls://127.0.0.1:${port}`);
  });

  it("a CLI command logs in through the callout over TLS and makes a signed request", async () => {
    const io = recordingIo({ env: { UNIBUS_HOME: join(tmp, "home") }, cwd: tmp });
    const code = await runCli(["users", "list"], io);
    expect(code, io.all()).toBe(0);
    expect(io.all()).toMatch(/admin/);
  });

  it("refuses a client that does not speak TLS, and one that does not trust the CA", async () => {
    const answer = await plaintextAttempt(port);
    expect(answer).not.toContain("PONG");
    expect(answer).toMatch(/"tls_required":true/);
    // Without the home's CA the certificate does not verify: no silent trust.
    await expect(connect({ servers: `tls://127.0.0.1:${port}`, reconnect: false, timeout: 5_000, tls: {} })).rejects.toThrow();
    const io = recordingIo({ env: { UNIBUS_URL: `tls://127.0.0.1:${port}`, UNIBUS_IDENTITY: join(tmp, "home", "admin.id") }, cwd: tmp });
    expect(await runCli(["users", "list"], io)).toBe(1);
  });
});
