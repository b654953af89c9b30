import { readFile, readdir, rm, stat, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { beforeEach, describe, expect, it } from "vitest";
import { findNatsServer } from "@unibus/natsd";
import { freeLoopbackPort } from "@unibus/testing";
import type { HomeLayout } from "../home.js";
import { assertAllStreamsLoaded, digestAll, plaintextStreams, startMaintenanceServer, streamDirs } from "../store/maintenance.js";
import type { StoreKeys } from "../store/maintenance.js";
import { writeNewKeyFile } from "../store/operations.js";
import { runCliRecorded, tempCliHome } from "../test-home.js";
import { generateJetStreamKey, provisionHome } from "../up/provision.js";

// The same binary every integration test uses: NATS_SERVER_BIN, else the
// project's provisioned copy (CI sets no variable).
const BIN = (await findNatsServer({ log: () => undefined })).bin;
const MARKER = "UNIBUS-PLAINTEXT-MARKER";
const MESSAGES = 40;

let tmp: string;
let home: HomeLayout;
let env: Record<string, string>;

beforeEach(async () => {
  ({ tmp, home, env } = await tempCliHome("unibus-store-", () => ({ NATS_SERVER_BIN: BIN })));
  return () => rm(tmp, { recursive: true, force: true });
});
const cli = (...argv: string[]): Promise<{ code: number; out: string }> => runCliRecorded(argv, { env, cwd: tmp });

/** A stream with marker payloads, a KV bucket and a durable consumer, written with `keys`. */
async function seed(keys: StoreKeys): Promise<void> {
  const m = await startMaintenanceServer({ bin: BIN, storeDir: home.jetstreamDir, workDir: join(tmp, "seed"), keys });
  try {
    const jsm = await jetstreamManager(m.nc);
    await jsm.streams.add({ name: "ORDERS", subjects: ["orders.>"] });
    const js = jetstream(m.nc);
    for (let i = 0; i < MESSAGES; i++) await js.publish(`orders.${i % 3}`, `${MARKER}-${i}`);
    await jsm.consumers.add("ORDERS", { durable_name: "billing", ack_policy: "explicit" });
    // A consumer that has made progress: a copy must keep its position, not only its name.
    const batch = await (await js.consumers.get("ORDERS", "billing")).fetch({ max_messages: 5, expires: 5_000 });
    for await (const msg of batch) await msg.ackAck();
    const kv = await new Kvm(m.nc).create("settings");
    await kv.put("theme", `${MARKER}-kv-dark`);
    await kv.put("theme", `${MARKER}-kv-light`);
  } finally {
    await m.stop();
  }
}

/** Everything the store holds, readable with `keys`: digests, message bodies, consumers. */
async function contents(keys: StoreKeys): Promise<unknown> {
  const m = await startMaintenanceServer({ bin: BIN, storeDir: home.jetstreamDir, workDir: join(tmp, `read-${Date.now()}`), keys });
  try {
    const streams = await assertAllStreamsLoaded(m, home.jetstreamDir, "the test key");
    const digests = await digestAll(m.nc, streams);
    const jsm = await jetstreamManager(m.nc);
    const first = await jsm.streams.getMessage("ORDERS", { seq: 1 });
    const consumers = (await jsm.consumers.list("ORDERS").next()).map((c) => c.name);
    const kv = await new Kvm(m.nc).open("settings");
    return { digests: Object.fromEntries(digests), first: first?.string(), consumers, theme: (await kv.get("theme"))?.string() };
  } finally {
    await m.stop();
  }
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(join(e.parentPath, e.name));
  return out;
}

/** Store files whose bytes contain the marker in the clear. */
async function filesWithMarker(dir: string): Promise<string[]> {
  const hits: string[] = [];
  for (const f of await filesUnder(dir)) if ((await readFile(f)).includes(MARKER)) hits.push(f);
  return hits;
}

async function withKeyFile(): Promise<string> {
  await provisionHome(home, []);
  return (await readFile(home.jetstreamKeyFile, "utf8")).trim();
}

describe("unibus store rotate-key", () => {
  it("re-encrypts every stream under a new key: same contents, old key refused, no plaintext", async () => {
    const oldKey = await withKeyFile();
    await seed({ key: oldKey });
    const before = await contents({ key: oldKey });
    expect(before).toMatchObject({ first: `${MARKER}-0`, consumers: ["billing"], theme: `${MARKER}-kv-light` });
    expect(JSON.stringify(before)).toContain("billing 5 5");

    const { code, out } = await cli("store", "rotate-key");
    expect(code, out).toBe(0);
    const newKey = (await readFile(home.jetstreamKeyFile, "utf8")).trim();
    expect(newKey).not.toBe(oldKey);
    expect((await stat(home.jetstreamKeyFile)).mode & 0o777).toBe(0o600);
    expect(out).not.toContain(oldKey);
    expect(out).not.toContain(newKey);
    expect(out).toContain("2 streams, 41 messages");

    expect(await contents({ key: newKey })).toEqual(before);
    expect(await filesWithMarker(home.jetstreamDir)).toEqual([]);
    // The old key alone opens nothing: the server skips what it cannot decrypt, and the check says so.
    await expect(contents({ key: oldKey })).rejects.toThrow(/2 of 2 streams .* cannot be opened/);
    // …and that failed start changed nothing.
    expect(await contents({ key: newKey })).toEqual(before);
  });

  it("finishes an interrupted rotation, and `up` refuses to start until it is finished", async () => {
    const oldKey = await withKeyFile();
    await seed({ key: oldKey });
    const before = await contents({ key: oldKey });
    const nextKey = generateJetStreamKey();
    await writeNewKeyFile(`${home.jetstreamKeyFile}.next`, nextKey);
    await expect(provisionHome(home, [])).rejects.toThrow(/interrupted key rotation/);

    const { code, out } = await cli("store", "rotate-key");
    expect(code, out).toBe(0);
    expect(out).toContain("finishing an interrupted rotation");
    expect((await readFile(home.jetstreamKeyFile, "utf8")).trim()).toBe(nextKey);
    expect(await contents({ key: nextKey })).toEqual(before);

    // Interrupted after the swap, before the key file was replaced: only the rename is left.
    await writeNewKeyFile(`${home.jetstreamKeyFile}.next`, nextKey);
    await rm(home.jetstreamKeyFile);
    await writeNewKeyFile(home.jetstreamKeyFile, oldKey);
    const finish = await cli("store", "rotate-key");
    expect(finish.code, finish.out).toBe(0);
    expect(finish.out).toContain("already re-encrypted");
    expect((await readFile(home.jetstreamKeyFile, "utf8")).trim()).toBe(nextKey);
    expect(await contents({ key: nextKey })).toEqual(before);
  });

  it("refuses a wrong key without touching the store", async () => {
    await withKeyFile();
    const realKey = generateJetStreamKey();
    await seed({ key: realKey });
    const { code, out } = await cli("store", "rotate-key");
    expect(code).toBe(1);
    expect(out).toMatch(/2 of 2 streams .* cannot be opened with the current key/);
    await expect(stat(`${home.jetstreamKeyFile}.next`)).rejects.toThrow();
    expect(await contents({ key: realKey })).toMatchObject({ first: `${MARKER}-0` });
  });
});

describe("unibus up with the wrong key", () => {
  it("refuses to start a bus that would look empty, and leaves the store as it was", async () => {
    await withKeyFile();
    const realKey = generateJetStreamKey();
    await seed({ key: realKey });
    const before = await contents({ key: realKey });
    env = { ...env, UNIBUS_PORT: String(await freeLoopbackPort()), UNIBUS_MONITOR_PORT: String(await freeLoopbackPort()) };
    const { code, out } = await cli("up");
    expect(code, out).toBe(1);
    expect(out).toMatch(/opened 0 of the 2 streams .* is not the key this store was written with/);
    expect(await streamDirs(home.jetstreamDir)).toEqual(["KV_settings", "ORDERS"]);
    expect(await contents({ key: realKey })).toEqual(before);
  });
});

describe("unibus store encrypt", () => {
  it("migrates a plaintext store: same contents, no plaintext left, a new 0600 key", async () => {
    await seed({});
    expect((await filesWithMarker(home.jetstreamDir)).length).toBeGreaterThan(0);
    expect(await plaintextStreams(home.jetstreamDir)).toEqual(["KV_settings", "ORDERS"]);
    const before = await contents({});

    const { code, out } = await cli("store", "encrypt");
    expect(code, out).toBe(0);
    const key = (await readFile(home.jetstreamKeyFile, "utf8")).trim();
    expect((await stat(home.jetstreamKeyFile)).mode & 0o777).toBe(0o600);
    expect(out).not.toContain(key);
    expect(await plaintextStreams(home.jetstreamDir)).toEqual([]);
    expect(await filesWithMarker(home.jetstreamDir)).toEqual([]);
    expect(await filesWithMarker(home.root)).toEqual([]);
    expect(await contents({ key })).toEqual(before);

    // An encrypted store is copied again (key files do not prove every block is encrypted), and reads the same.
    const again = await cli("store", "encrypt");
    expect(again.code, again.out).toBe(0);
    expect(await contents({ key })).toEqual(before);
  });

});

describe("unibus store backup / restore", () => {
  it("round-trips through a wipe; the file holds no plaintext", async () => {
    const key = await withKeyFile();
    await seed({ key });
    const before = await contents({ key });
    const file = join(tmp, "bus.backup");

    const b = await cli("store", "backup", file);
    expect(b.code, b.out).toBe(0);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await stat(join(home.secretsDir, "backup.key"))).mode & 0o777).toBe(0o600);
    expect((await readFile(file)).includes(MARKER)).toBe(false);
    expect((await cli("store", "backup", file)).out).toMatch(/exists/);

    await rm(home.jetstreamDir, { recursive: true });
    const r = await cli("store", "restore", file);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain("restored 2 streams, 41 messages");
    expect(await contents({ key })).toEqual(before);
    expect(await filesWithMarker(home.jetstreamDir)).toEqual([]);

    // A store with data is replaced only on request.
    const refused = await cli("store", "restore", file);
    expect(refused.code).toBe(1);
    expect(refused.out).toContain("--replace");
    const replaced = await cli("store", "restore", file, "--replace");
    expect(replaced.code, replaced.out).toBe(0);
    expect(await contents({ key })).toEqual(before);
  });

  it("a wrong key, a tampered or a truncated file fails before the store is touched", async () => {
    const key = await withKeyFile();
    await seed({ key });
    const file = join(tmp, "bus.backup");
    expect((await cli("store", "backup", file)).code).toBe(0);
    const before = await contents({ key });
    const listing = async (): Promise<string[]> => (await filesUnder(home.jetstreamDir)).sort();
    const filesBefore = await listing();

    const otherKey = join(tmp, "other.key");
    await writeFile(otherKey, `${generateJetStreamKey()}\n`, { mode: 0o600 });
    const wrong = await cli("store", "restore", file, "--replace", "--key-file", otherKey);
    expect(wrong.code).toBe(1);
    expect(wrong.out).toContain("wrong backup key");

    const bytes = await readFile(file);
    const tampered = join(tmp, "tampered.backup");
    const copy = Buffer.from(bytes);
    copy[Math.floor(copy.length / 2)]! ^= 0x01;
    await writeFile(tampered, copy);
    const t = await cli("store", "restore", tampered, "--replace");
    expect(t.code).toBe(1);
    expect(t.out).toMatch(/damaged/);

    const cut = join(tmp, "cut.backup");
    await writeFile(cut, bytes);
    await truncate(cut, bytes.length - 200);
    const c = await cli("store", "restore", cut, "--replace");
    expect(c.code).toBe(1);
    expect(c.out).toMatch(/truncated|damaged/);

    expect(await listing()).toEqual(filesBefore);
    expect(await contents({ key })).toEqual(before);
    expect(await streamDirs(`${home.jetstreamDir}.new`)).toEqual([]);
  });

  it("refuses to run while `unibus up` holds the state dir", async () => {
    await withKeyFile();
    await writeFile(home.lockFile, `${process.pid === 1 ? 2 : 1}\n`);
    const { code, out } = await cli("store", "rotate-key");
    expect(code).toBe(1);
    expect(out).toMatch(/another `unibus up`/);
  });
});
