import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { randomBytes, SigningKey, toHex } from "@unibus/crypto";
import { replicaHandshake, ReplicaHandshakeRejectedError } from "@unibus/sdk";
import { eventually, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";

const mainScript = fileURLToPath(new URL("./main.ts", import.meta.url));
const psk = randomBytes(32);
const forms = [toHex(psk), Buffer.from(psk).toString("base64"), Buffer.from(psk).toString("base64url")];
let server: TestServer;
let nc: NatsConnection;
let dir: string;

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  dir = mkdtempSync(join(tmpdir(), "gw-main-"));
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Starts the real service main with the PSK in a file named by the environment. */
function startMain(pskFile: string): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, ["--import", "tsx", mainScript], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, UNIBUS_URL: server.url, UNIBUS_REPLICA_PSK_FILE: pskFile, UNIBUS_CLUSTER_NAME: "main-test", UNIBUS_REPLICA_ID: "gw-main", UNIBUS_LOG_LEVEL: "debug" },
  });
  let text = "";
  child.stdout?.on("data", (c: Buffer) => (text += c.toString()));
  child.stderr?.on("data", (c: Buffer) => (text += c.toString()));
  return { child, output: () => text };
}

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  await eventually(check, Boolean, { timeoutMs, intervalMs: 50, what });
}

it("the service main reads the PSK from a 0600 file: handshakes work, and the PSK is in neither its argv nor its logs", async () => {
  const file = join(dir, "psk");
  writeFileSync(file, toHex(psk), { mode: 0o600 });
  const { child, output } = startMain(file);
  try {
    await until("service started", () => output().includes("service started"));
    const cmdline = readFileSync(`/proc/${child.pid}/cmdline`, "utf8");
    const ok = await replicaHandshake(nc, { clusterName: "main-test", replicaId: "node-9", psk, identity: SigningKey.generate() });
    expect(ok.acceptorId).toBe("gw-main");
    await expect(replicaHandshake(nc, { clusterName: "main-test", replicaId: "node-9", psk: randomBytes(32), identity: SigningKey.generate() })).rejects.toBeInstanceOf(ReplicaHandshakeRejectedError);
    await until("both outcomes logged", () => output().includes("replica handshake accepted") && output().includes("replica hello rejected"));
    for (const form of forms) {
      expect(cmdline).not.toContain(form);
      expect(output()).not.toContain(form);
    }
  } finally {
    child.kill("SIGTERM");
    await once(child, "exit");
  }
});

it("a PSK file readable by others stops the start with one fatal line and a non-zero exit, without the key", async () => {
  const file = join(dir, "loose");
  writeFileSync(file, toHex(psk), { mode: 0o644 });
  chmodSync(file, 0o644);
  const { child, output } = startMain(file);
  const [code] = (await once(child, "exit")) as [number];
  expect(code).not.toBe(0);
  expect(output()).toMatch(/mode 0600/);
  for (const form of forms) expect(output()).not.toContain(form);
});
