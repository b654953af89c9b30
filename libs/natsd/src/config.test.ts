import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { envRef, mergeNatsConfig, renderNatsConfig } from "./config.js";
import type { NatsConfig } from "./config.js";
import { NatsConfigError } from "./errors.js";
import { findNatsServer } from "./provision.js";

const run = promisify(execFile);

describe("renderNatsConfig", () => {
  it("renders scalars, nested maps and arrays in nats-server syntax", () => {
    expect(
      renderNatsConfig({
        port: 4222,
        debug: false,
        jetstream: { store_dir: "/tmp/js", max_mem_store: 1024 },
        cluster: { routes: ["nats://a:6222", "nats://b:6222"], empty: [] },
        accounts: {},
      }),
    ).toBe(
      [
        "port: 4222",
        "debug: false",
        "jetstream: {",
        '  store_dir: "/tmp/js"',
        "  max_mem_store: 1024",
        "}",
        "cluster: {",
        "  routes: [",
        '    "nats://a:6222"',
        '    "nats://b:6222"',
        "  ]",
        "  empty: []",
        "}",
        "accounts: {}",
        "",
      ].join("\n"),
    );
  });

  it("escapes quotes, backslashes and control characters inside strings", () => {
    expect(renderNatsConfig({ s: 'a"b\\c\nd\te\u0001' })).toBe('s: "a\\"b\\\\c\\nd\\te\\x01"\n');
  });

  it("renders an envRef as a $VARIABLE so the secret stays in the environment", () => {
    expect(renderNatsConfig({ jetstream: { key: envRef("UNIBUS_JS_KEY") } })).toContain("key: $UNIBUS_JS_KEY");
  });

  it("quotes keys that are not plain identifiers", () => {
    expect(renderNatsConfig({ accounts: { "$weird-name": { users: [] } } })).toContain('"$weird-name": {');
  });

  it("omits undefined entries", () => {
    expect(renderNatsConfig({ a: 1, b: undefined })).toBe("a: 1\n");
  });

  it("rejects values it cannot express", () => {
    expect(() => renderNatsConfig({ n: Number.NaN })).toThrow(NatsConfigError);
    expect(() => envRef("NOT-A-NAME")).toThrow(NatsConfigError);
    expect(() => renderNatsConfig({ "": 1 })).toThrow(NatsConfigError);
  });

  it("rejects a server_name with whitespace, naming the field, and accepts one without", () => {
    for (const name of ["unibus local", "tab\tname", " lead"]) {
      expect(() => renderNatsConfig({ server_name: name })).toThrow(/server_name .* contains whitespace/);
    }
    expect(renderNatsConfig({ server_name: "unibus-local_1" })).toBe('server_name: "unibus-local_1"\n');
  });
});

describe("mergeNatsConfig", () => {
  it("merges nested maps key by key and replaces arrays", () => {
    expect(
      mergeNatsConfig(
        { jetstream: { store_dir: "/a", max_mem_store: 1 }, routes: ["x"] },
        { jetstream: { store_dir: "/b" }, routes: ["y"] },
        undefined,
      ),
    ).toEqual({ jetstream: { store_dir: "/b", max_mem_store: 1 }, routes: ["y"] });
  });
});

describe("renderNatsConfig with the real nats-server (-t)", () => {
  let dir: string;
  let bin: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "natsd-config-"));
    bin = (await findNatsServer()).bin;
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function check(config: NatsConfig, env: Record<string, string> = {}): Promise<string> {
    const path = join(dir, `c${Math.random().toString(36).slice(2)}.conf`);
    await writeFile(path, renderNatsConfig(config));
    const { stdout, stderr } = await run(bin, ["-t", "-c", path], { env: { ...process.env, ...env } });
    return stdout + stderr;
  }

  it("accepts a config with every value kind, accounts, quoted keys and an env-substituted key", async () => {
    const out = await check(
      {
        host: "127.0.0.1",
        port: -1,
        server_name: 'n1-"quoted"',
        max_payload: 1048576,
        debug: false,
        jetstream: { store_dir: join(dir, "js"), cipher: "chachapoly", key: envRef("UNIBUS_JS_KEY") },
        accounts: {
          APP: { jetstream: true, users: [{ user: "app", password: "p$ss\\w\"d" }] },
          "SYS-ACC": { users: [{ user: "sys", password: "s" }] },
        },
        system_account: "SYS-ACC",
      },
      { UNIBUS_JS_KEY: "Kabc123" },
    );
    expect(out).toMatch(/is valid/);
  });

  it("is refused by nats-server when server_name has a space (why the renderer rejects it)", async () => {
    const path = join(dir, "spaced-name.conf");
    await writeFile(path, 'server_name: "n 1"\nport: -1\n');
    await expect(run(bin, ["-t", "-c", path])).rejects.toThrow(/server name cannot contain spaces/);
  });

  it("is rejected by the server when a field is unknown (the renderer does not hide mistakes)", async () => {
    await expect(check({ no_such_field: 1 })).rejects.toThrow(/unknown field/);
  });
});
