import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SigningKey, createIdentity, writeIdentityFile } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { busReadiness } from "./connection.js";
import { runCli } from "./router.js";
import { recordingIo } from "./test-io.js";

// A real nats-server that admits one nkey user only: every other identity
// gets the server's generic "Authorization Violation", as behind the callout.
describe("a failed connect says which of three things went wrong", () => {
  let server: TestServer;
  let readyz: Server;
  let readyStatus = 200;
  let healthzUrl: string;
  let dir: string;
  let identity: Identity;
  let idPath: string;

  beforeAll(async () => {
    server = await startTestServer({ jetstream: false, config: { authorization: { users: [{ nkey: SigningKey.generate().principal }] } } });
    readyz = createServer((req, res) => {
      res.statusCode = req.url === "/readyz" ? readyStatus : 404;
      res.end();
    });
    await new Promise<void>((resolve) => readyz.listen(0, "127.0.0.1", resolve));
    const addr = readyz.address();
    healthzUrl = `http://127.0.0.1:${typeof addr === "object" && addr !== null ? addr.port : 0}`;
    dir = await mkdtemp(join(tmpdir(), "unibus-cli-refusal-"));
    identity = createIdentity({ label: "refused" });
    idPath = join(dir, "refused.id");
    await writeIdentityFile(idPath, identity);
  });
  afterAll(async () => {
    await server?.stop();
    await new Promise((resolve) => readyz?.close(resolve));
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  const attempt = async (env: Record<string, string>): Promise<string> => {
    const io = recordingIo({ cwd: dir, env: { UNIBUS_URL: server.url, UNIBUS_IDENTITY: idPath, ...env } });
    expect(await runCli(["users", "list"], io)).toBe(1);
    expect(io.all()).not.toMatch(/\n\s+at /);
    return io.stderr.join("\n");
  };

  it("reachable and ready: this identity was refused, and an admin can look it up by principal", async () => {
    readyStatus = 200;
    const msg = await attempt({ UNIBUS_HEALTHZ_URL: healthzUrl });
    expect(msg).toContain("this identity was refused");
    expect(msg).toContain(`unibus audit denials --principal ${identity.principal}`);
  });

  it("reachable but not ready: no quorum / directory unavailable, not a verdict on the identity", async () => {
    readyStatus = 503;
    const msg = await attempt({ UNIBUS_HEALTHZ_URL: healthzUrl });
    expect(msg).toMatch(/cannot admit anyone right now: it has no quorum or its directory is unavailable/);
    expect(msg).not.toContain("this identity was refused");
  });

  it("without a readiness URL: says it cannot tell the two apart, and how to", async () => {
    const msg = await attempt({});
    expect(msg).toMatch(/either this identity is not allowed in, or the bus's directory is unavailable \(set UNIBUS_HEALTHZ_URL/);
    expect(msg).toContain(`unibus audit denials --principal ${identity.principal}`);
  });

  it("a readiness URL that does not answer counts as unknown, never as a verdict", async () => {
    expect(await busReadiness("http://127.0.0.1:1")).toBe("unknown");
    expect(await busReadiness("not a url")).toBe("unknown");
    expect(await busReadiness(undefined)).toBe("unknown");
  });

  it("the four failures read differently (unreachable included)", async () => {
    readyStatus = 200;
    const refused = await attempt({ UNIBUS_HEALTHZ_URL: healthzUrl });
    readyStatus = 503;
    const notReady = await attempt({ UNIBUS_HEALTHZ_URL: healthzUrl });
    const unknown = await attempt({});
    const io = recordingIo({ cwd: dir, env: { UNIBUS_URL: "nats://127.0.0.1:1", UNIBUS_IDENTITY: idPath } });
    expect(await runCli(["users", "list"], io)).toBe(1);
    const unreachable = io.stderr.join("\n");
    expect(unreachable).toMatch(/cannot reach the bus/);
    expect(new Set([refused, notReady, unknown, unreachable]).size).toBe(4);
  });
});
