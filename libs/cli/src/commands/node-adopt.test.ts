import { mkdir, readdir, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { writeNodeClusterInfo } from "@unibus/sdk";
import { CLUSTER_FILE } from "../cluster/convert.js";
import type { HomeLayout } from "../home.js";
import { runCliRecorded, tempCliHome } from "../test-home.js";
import { provisionHome } from "../up/provision.js";
import { ALL_SERVICES } from "../up/services.js";

// The command-line side of the first node's adoption, where no server is
// needed: what `up` and `node adopt` refuse, and that a refusal provisions
// nothing (a new key file beside an adopted node's empty home would be a
// disk key that opens nothing and misleads the next operator).
let tmp: string;
let home: HomeLayout;
let nodeDir: string;
let env: Record<string, string>;
beforeEach(async () => {
  ({ tmp, home, env } = await tempCliHome("unibus-adopt-cli-", (dir) => ({ UNIBUS_NODE_HOME: join(dir, "node"), NATS_SERVER_BIN: "/work/none" })));
  nodeDir = env["UNIBUS_NODE_HOME"]!;
  await mkdir(home.root, { recursive: true, mode: 0o700 });
  return () => rm(tmp, { recursive: true, force: true });
});
const cli = (...argv: string[]): Promise<{ code: number; out: string }> => runCliRecorded(argv, { env, cwd: tmp });

async function writeRecord(fields: Record<string, unknown>): Promise<string> {
  const text = `${JSON.stringify({ version: 1, cluster_name: "prod", server_name: "n1", listen: "127.0.0.1:6222", routes: ["nats-route://127.0.0.1:6223", "nats-route://127.0.0.1:6224"], replicas: 3, promoted_at: "2026-12-05T00:00:00Z", ...fields })}\n`;
  await writeFile(join(home.root, CLUSTER_FILE), text, { mode: 0o600 });
  return text;
}

async function registered(nodeId: string): Promise<void> {
  await mkdir(nodeDir, { recursive: true, mode: 0o700 });
  await rm(join(nodeDir, "cluster.json"), { force: true });
  await writeNodeClusterInfo(nodeDir, { nodeId, clusterName: "prod", clusterId: "c", historyKey: "h", agreementKey: "a" });
}

describe("unibus up and node adopt on an adopted home", () => {
  it("up on an adopted home with no identities refuses (services only), creating nothing", async () => {
    await writeRecord({ node_home: nodeDir, adopted_at: "2026-12-05T01:00:00Z" });
    const { code, out } = await cli("up");
    expect(code, out).toBe(1);
    expect(out).toContain("runs only the services of a cluster node");
    expect(await readdir(home.root)).not.toContain("secrets");
  });

  it("up on an adopted home whose node server is not running names the node start, and makes no key", async () => {
    await provisionHome(home, ALL_SERVICES);
    await unlink(home.jetstreamKeyFile);
    await rm(home.jetstreamDir, { recursive: true });
    await writeRecord({ node_home: nodeDir, adopted_at: "2026-12-05T01:00:00Z" });
    // NATS_SERVER_BIN points nowhere: reaching this refusal shows no server is looked for.
    const { code, out } = await cli("up");
    expect(code, out).toBe(1);
    expect(out).toContain("is not running from");
    expect(out).toContain(`unibus node start --home ${nodeDir}`);
    expect(await readdir(home.secretsDir)).not.toContain("jetstream.key");
    expect(await readdir(home.root)).not.toContain("data");
  });

  it("up refuses a half-adopted home and says to run the adoption again", async () => {
    await writeRecord({ node_home: nodeDir });
    const { code, out } = await cli("up");
    expect(code, out).toBe(1);
    expect(out).toMatch(/not finished: run it again/);
    expect(await readdir(home.root)).not.toContain("secrets");
  });

  it("node adopt refuses an adopted home before provisioning anything", async () => {
    await registered("n1");
    const record = await writeRecord({ node_home: nodeDir, adopted_at: "2026-12-05T01:00:00Z" });
    const { code, out } = await cli("node", "adopt");
    expect(code, out).toBe(1);
    expect(out).toMatch(/already runs from/);
    expect(await readdir(home.root)).not.toContain("secrets");
    expect(await readFile(join(home.root, CLUSTER_FILE), "utf8")).toBe(record);
  });

  it("node adopt refuses a node home registered under another name, and one never registered", async () => {
    await writeRecord({});
    expect((await cli("node", "adopt")).out).toMatch(/run unibus node register first/);
    await registered("n9");
    const { code, out } = await cli("node", "adopt");
    expect(code, out).toBe(1);
    expect(out).toMatch(/register the node with the id n1/);
    expect(await readdir(home.root)).not.toContain("secrets");
    await expect(readdir(join(nodeDir, "data"))).rejects.toMatchObject({ code: "ENOENT" });
  });
});
