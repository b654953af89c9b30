// Runs the real `unibus up` (nats-server + every service as processes) in a
// temp state dir, as `npm start` would, and checks what an operator sees.
import { spawn, execFile } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { readdir, readFile, mkdtemp, rm, stat } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { loadIdentityFile, nkeyAuthenticator } from "@unibus/crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { serviceAvailability } from "../src/up/services.js";

const BIN = fileURLToPath(new URL("../bin/unibus.mjs", import.meta.url));
const run = promisify(execFile);

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      s.close(() => resolve(typeof addr === "object" && addr ? addr.port : 0));
    });
  });
}

interface Up {
  readonly child: ChildProcess;
  output(): string;
  readonly exited: Promise<number | null>;
}

function startUp(env: NodeJS.ProcessEnv): Up {
  const child = spawn(process.execPath, [BIN, "up"], { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return { child, output: () => out, exited };
}

async function microLs(env: NodeJS.ProcessEnv): Promise<{ name: string; version: string; id: string }[]> {
  const { stdout } = await run(process.execPath, [BIN, "micro", "ls", "--json", "--timeout", "1000"], { env });
  return JSON.parse(stdout) as { name: string; version: string; id: string }[];
}

/** Expected micro names of the services present in this checkout (the callout registers as `unibus-auth-callout`). */
const expected = serviceAvailability().filter((s) => s.available).map((s) => s.name);
const matches = (service: string, microName: string): boolean => microName === service || microName === `unibus-${service}`;

async function waitForServices(env: NodeJS.ProcessEnv, up: Up, ms: number): Promise<{ name: string; version: string; id: string }[]> {
  const end = Date.now() + ms;
  let last: { name: string; version: string; id: string }[] = [];
  while (Date.now() < end) {
    if (up.child.exitCode !== null) throw new Error(`unibus up exited early:\n${up.output()}`);
    if (up.output().includes("Next: npx unibus micro ls")) {
      try {
        last = await microLs(env);
        if (expected.every((s) => last.some((i) => matches(s, i.name)))) return last;
      } catch {
        // Not ready yet.
      }
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`services did not all appear; last ls: ${JSON.stringify(last)}\n${up.output()}`);
}

async function stopUp(up: Up): Promise<number | null> {
  up.child.kill("SIGTERM");
  return up.exited;
}

describe("unibus up (real processes)", () => {
  let home: string;
  let env: NodeJS.ProcessEnv;
  const running: Up[] = [];

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), "unibus-up-"));
    const { UNIBUS_URL: _u, UNIBUS_IDENTITY: _i, ...rest } = process.env;
    env = { ...rest, UNIBUS_HOME: home, UNIBUS_PORT: String(await freePort()), UNIBUS_MONITOR_PORT: String(await freePort()) };
  });
  afterAll(async () => {
    for (const up of running) if (up.child.exitCode === null) up.child.kill("SIGKILL");
    await rm(home, { recursive: true, force: true });
  });

  it("starts every available service, stops cleanly on SIGTERM, and a second run reuses identities and data", { timeout: 60_000 }, async () => {
    const first = startUp(env);
    running.push(first);
    const services = await waitForServices(env, first, 25_000);
    for (const s of expected) {
      const instance = services.find((i) => matches(s, i.name));
      expect(instance?.version, `${s} listed with a version`).toMatch(/^\d+\.\d+\.\d+/);
    }
    expect(first.output()).toContain("auth callout is NOT enabled yet");

    // info / stats / ping speak the same protocol; an unknown name is a failure.
    const [info, stats, ping] = await Promise.all([
      run(process.execPath, [BIN, "micro", "info", "membership"], { env }),
      run(process.execPath, [BIN, "micro", "stats", "--json"], { env }),
      run(process.execPath, [BIN, "micro", "ping", "healthz", "--json"], { env }),
    ]);
    expect(info.stdout).toMatch(/^membership \d+\.\d+\.\d+ \(/);
    expect((JSON.parse(stats.stdout) as unknown[]).length).toBeGreaterThanOrEqual(expected.length);
    expect(JSON.parse(ping.stdout)).toEqual([expect.objectContaining({ name: "healthz", rtt_ms: expect.any(Number) })]);
    const unknown = await run(process.execPath, [BIN, "micro", "info", "no-such-service", "--timeout", "500"], { env }).catch((e: { code: number; stderr: string }) => e);
    expect((unknown as { code: number }).code).toBe(1);

    // The env file points at the admin identity; JetStream works for the admin.
    const envFile = await readFile(join(home, "env"), "utf8");
    expect((await stat(join(home, "env"))).mode & 0o777).toBe(0o600);
    expect(envFile).toContain(`UNIBUS_IDENTITY=${join(home, "admin.id")}`);
    const admin = await loadIdentityFile(join(home, "admin.id"));
    const url = /UNIBUS_URL=(.*)/.exec(envFile)?.[1] ?? "";
    const marker = `survives-${Date.now()}`;
    {
      const nc = await connect({ servers: url, authenticator: nkeyAuthenticator(admin.signingKey) });
      const kv = await new Kvm(nc).create("cli_itest");
      await kv.put("marker", marker);
      await nc.close();
    }
    // A stranger cannot connect.
    const stranger = await run(process.execPath, [BIN, "micro", "ls", "--server", url], { env: { ...env, UNIBUS_HOME: join(home, "nope") } }).catch((e: { code: number; stderr: string }) => e);
    expect((stranger as { code: number }).code).toBe(1);
    expect((stranger as { stderr: string }).stderr).toContain("refused");

    // A second `up` on the same home is refused while the first runs.
    const second = await run(process.execPath, [BIN, "up"], { env }).catch((e: { code: number; stderr: string }) => e);
    expect((second as { code: number }).code).toBe(1);
    expect((second as { stderr: string }).stderr).toMatch(/another `unibus up` \(pid \d+\)/);

    expect(await stopUp(first)).toBe(0);
    expect(first.output()).toContain("[unibus up] stopped");
    await expect(stat(join(home, "up.lock"))).rejects.toThrow();

    // At rest, the store holds no plaintext copy of the value.
    const files = await readdir(join(home, "data"), { recursive: true });
    expect(files.some((f) => f.includes("KV_cli_itest"))).toBe(true);
    for (const f of files) {
      const p = join(home, "data", f);
      if ((await stat(p)).isFile()) expect((await readFile(p)).includes(marker), `${f} has plaintext`).toBe(false);
    }

    const again = startUp(env);
    running.push(again);
    await waitForServices(env, again, 25_000);
    expect(again.output()).not.toContain("created");
    expect(again.output()).toContain(admin.principal);
    {
      const nc = await connect({ servers: url, authenticator: nkeyAuthenticator(admin.signingKey) });
      const kv = await new Kvm(nc).open("cli_itest");
      expect((await kv.get("marker"))?.string()).toBe(marker);
      await nc.close();
    }
    expect(await stopUp(again)).toBe(0);
  });
});
