import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { randomBytes } from "@unibus/crypto";
import { ensurePrivateDir, resolveHome } from "../home.js";
import type { HomeLayout } from "../home.js";
import { AdoptErrorReason, adoptFirstNode } from "./adopt.js";
import type { AdoptFirstNodeOptions } from "./adopt.js";
import { CLUSTER_FILE } from "./convert.js";

// The refusals that need no server: each must leave the home's store, key
// file and cluster record exactly as they were, and never ask for the keys.
let tmp: string;
let home: HomeLayout;
let unlocked: number;
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), "unibus-adopt-"));
  home = resolveHome({ UNIBUS_HOME: join(tmp, "home") }, tmp);
  await ensurePrivateDir(home.root);
  await ensurePrivateDir(join(home.jetstreamDir, "jetstream"));
  await ensurePrivateDir(home.secretsDir);
  await writeFile(home.jetstreamKeyFile, "Kthehomekeythehomekeythehomekey0123\n", { mode: 0o600 });
  unlocked = 0;
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function options(overrides: Partial<AdoptFirstNodeOptions> = {}): AdoptFirstNodeOptions {
  return {
    home,
    nodeDir: join(tmp, "node"),
    nodeId: "n1",
    clusterName: "prod",
    bin: "/nonexistent/nats-server",
    say: () => undefined,
    jetstreamKey: "Kthehomekeythehomekeythehomekey0123",
    authorization: {},
    port: 1,
    unlock: () => {
      unlocked++;
      return Promise.resolve({ nuk: randomBytes(32), cuk: randomBytes(32) });
    },
    ...overrides,
  };
}

async function writeRecord(fields: Record<string, unknown>): Promise<string> {
  const text = `${JSON.stringify({ version: 1, cluster_name: "prod", server_name: "n1", listen: "127.0.0.1:6222", routes: ["nats-route://127.0.0.1:6223", "nats-route://127.0.0.1:6224"], replicas: 3, promoted_at: "2026-12-05T00:00:00Z", ...fields })}\n`;
  await writeFile(join(home.root, CLUSTER_FILE), text, { mode: 0o600 });
  return text;
}

async function expectUntouched(record: string | undefined): Promise<void> {
  expect(await readdir(home.jetstreamDir)).toEqual(["jetstream"]);
  expect(await readFile(home.jetstreamKeyFile, "utf8")).toContain("Kthehomekey");
  if (record !== undefined) expect(await readFile(join(home.root, CLUSTER_FILE), "utf8")).toBe(record);
  expect(unlocked).toBe(0);
}

describe("unibus node adopt refuses, with nothing changed", () => {
  it("a home that was never promoted: there are no peers to rebuild from", async () => {
    await expect(adoptFirstNode(options())).rejects.toMatchObject({ reason: AdoptErrorReason.notPromoted });
    await expectUntouched(undefined);
  });

  it("a cluster recorded below R3: this node may hold the only copy", async () => {
    const record = await writeRecord({ replicas: 1 });
    await expect(adoptFirstNode(options())).rejects.toMatchObject({ reason: AdoptErrorReason.notReplicated });
    await expectUntouched(record);
  });

  it("a node home registered under another server or cluster name: it would come back as a new peer", async () => {
    const record = await writeRecord({});
    await expect(adoptFirstNode(options({ nodeId: "n9" }))).rejects.toMatchObject({ reason: AdoptErrorReason.nodeMismatch });
    await expect(adoptFirstNode(options({ clusterName: "other" }))).rejects.toMatchObject({ reason: AdoptErrorReason.nodeMismatch });
    await expectUntouched(record);
  });

  it("a second adoption, or one from another node home than the run it would resume", async () => {
    const adopted = await writeRecord({ node_home: join(tmp, "node"), adopted_at: "2026-12-05T01:00:00Z" });
    await expect(adoptFirstNode(options())).rejects.toMatchObject({ reason: AdoptErrorReason.alreadyAdopted });
    await expectUntouched(adopted);
    const started = await writeRecord({ node_home: join(tmp, "elsewhere") });
    await expect(adoptFirstNode(options())).rejects.toMatchObject({ reason: AdoptErrorReason.nodeMismatch });
    await expectUntouched(started);
  });
});
