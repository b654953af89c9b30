import { chmod, mkdir, mkdtemp, readFile, rm, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CliError } from "../errors.js";
import { resolveHome, serviceIdentityFile } from "../home.js";
import type { HomeLayout } from "../home.js";
import { generateJetStreamKey, isValidJetStreamKey, provisionHome } from "./provision.js";
import { ALL_SERVICES } from "./services.js";

let home: HomeLayout;
let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), "unibus-cli-home-"));
  home = resolveHome({ UNIBUS_HOME: join(tmp, "state") }, tmp);
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const mode = async (p: string): Promise<number> => (await stat(p)).mode & 0o777;

describe("JetStream key", () => {
  it("is alphanumeric, starts with a letter, and is fresh each time", () => {
    const keys = new Set(Array.from({ length: 200 }, () => generateJetStreamKey()));
    expect(keys.size).toBe(200);
    for (const k of keys) {
      expect(k).toMatch(/^[A-Za-z][A-Za-z0-9]{47}$/);
      expect(isValidJetStreamKey(k)).toBe(true);
    }
    expect(isValidJetStreamKey("1abcdefghijklmnopqrstuvwxyzABCDEF")).toBe(false);
  });
});

describe("provisionHome", () => {
  it("creates private dirs (0700), a key and one identity per service plus admin (0600)", async () => {
    const state = await provisionHome(home, ALL_SERVICES);
    for (const d of [home.root, home.secretsDir, home.identitiesDir, home.serverDir, home.jetstreamDir]) expect(await mode(d)).toBe(0o700);
    const secrets = [home.calloutIssuerSeedFile, home.calloutXkeySeedFile, home.systemIdentityFile, home.bootstrapIdentityFile];
    for (const f of [home.jetstreamKeyFile, home.adminIdentityFile, ...secrets, ...ALL_SERVICES.map((s) => serviceIdentityFile(home, s))]) {
      expect(await mode(f)).toBe(0o600);
    }
    expect((await readFile(home.jetstreamKeyFile, "utf8")).trim()).toBe(state.jetstreamKey);
    expect(state.services.size).toBe(ALL_SERVICES.length);
    expect(new Set([state.admin.principal, ...[...state.services.values()].map((i) => i.principal)]).size).toBe(ALL_SERVICES.length + 1);
  });

  it("a second run reuses every key and identity", async () => {
    const first = await provisionHome(home, ALL_SERVICES);
    const second = await provisionHome(home, ALL_SERVICES);
    expect(second.created).toEqual([]);
    expect(second.jetstreamKey).toBe(first.jetstreamKey);
    expect(second.admin.principal).toBe(first.admin.principal);
    expect([second.system.principal, second.bootstrap.principal]).toEqual([first.system.principal, first.bootstrap.principal]);
    expect([second.calloutIssuerPublic, second.calloutXkeyPublic]).toEqual([first.calloutIssuerPublic, first.calloutXkeyPublic]);
    expect(first.calloutIssuerPublic).toMatch(/^A/);
    expect(first.calloutXkeyPublic).toMatch(/^X/);
    for (const s of ALL_SERVICES) expect(second.services.get(s)?.principal).toBe(first.services.get(s)?.principal);
  });

  it("refuses a callout seed that others can read", async () => {
    await provisionHome(home, ALL_SERVICES);
    await chmod(home.calloutXkeySeedFile, 0o644);
    await expect(provisionHome(home, ALL_SERVICES)).rejects.toThrow(/callout-xkey.seed is readable by others/);
  });

  it("refuses to regenerate a missing key when encrypted data exists", async () => {
    await provisionHome(home, ALL_SERVICES);
    await mkdir(join(home.jetstreamDir, "jetstream"), { recursive: true });
    await unlink(home.jetstreamKeyFile);
    await expect(provisionHome(home, ALL_SERVICES)).rejects.toThrow(/key file .* is missing[\s\S]*Restore/);
    await expect(stat(home.jetstreamKeyFile)).rejects.toThrow();
  });

  it("refuses a key file others can read", async () => {
    await provisionHome(home, ALL_SERVICES);
    await writeFile(home.jetstreamKeyFile, `${generateJetStreamKey()}\n`, { mode: 0o644 });
    await chmod(home.jetstreamKeyFile, 0o644);
    await expect(provisionHome(home, ALL_SERVICES)).rejects.toBeInstanceOf(CliError);
  });

  it("refuses to replace a missing admin identity when data exists", async () => {
    await provisionHome(home, ALL_SERVICES);
    await mkdir(join(home.jetstreamDir, "jetstream"), { recursive: true });
    await unlink(home.adminIdentityFile);
    await expect(provisionHome(home, ALL_SERVICES)).rejects.toThrow(/admin\.id is missing/);
  });
});

describe("provisionHome without a store key (an adopted node's services)", () => {
  async function adoptedHome(): Promise<void> {
    await provisionHome(home, ALL_SERVICES);
    await unlink(home.jetstreamKeyFile);
    await rm(home.jetstreamDir, { recursive: true });
  }
  const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

  it("reuses every identity and seed, and makes no key, store or server dir", async () => {
    await provisionHome(home, ALL_SERVICES);
    const before = await provisionHome(home, ALL_SERVICES);
    await unlink(home.jetstreamKeyFile);
    await rm(home.jetstreamDir, { recursive: true });
    await rm(home.serverDir, { recursive: true });
    const state = await provisionHome(home, ALL_SERVICES, { storeKey: false });
    expect(state.created).toEqual([]);
    expect("jetstreamKey" in state).toBe(false);
    expect(state.admin.principal).toBe(before.admin.principal);
    expect(state.calloutIssuerPublic).toBe(before.calloutIssuerPublic);
    expect([...state.services.values()].map((i) => i.principal)).toEqual([...before.services.values()].map((i) => i.principal));
    for (const p of [home.jetstreamKeyFile, home.jetstreamDir, home.serverDir]) expect(await exists(p)).toBe(false);
  });

  it.each([
    ["a service identity", (h: HomeLayout) => serviceIdentityFile(h, ALL_SERVICES[0] ?? "membership")],
    ["the bootstrap identity", (h: HomeLayout) => h.bootstrapIdentityFile],
    ["the admin identity", (h: HomeLayout) => h.adminIdentityFile],
    ["the callout issuer seed", (h: HomeLayout) => h.calloutIssuerSeedFile],
  ])("refuses a home missing %s, creating nothing", async (_what, pathOf) => {
    await adoptedHome();
    await unlink(pathOf(home));
    await expect(provisionHome(home, ALL_SERVICES, { storeKey: false })).rejects.toThrow(CliError);
    expect(await exists(pathOf(home))).toBe(false);
    expect(await exists(home.jetstreamKeyFile)).toBe(false);
  });

  it("refuses a home that was never provisioned (a wrong UNIBUS_HOME)", async () => {
    await expect(provisionHome(home, ALL_SERVICES, { storeKey: false })).rejects.toThrow(/directory .* is missing/);
    expect(await exists(home.root)).toBe(false);
  });
});
