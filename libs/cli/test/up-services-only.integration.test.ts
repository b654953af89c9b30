// `unibus up` on an adopted home: the node's nats-server runs from its node
// home (started here the way `unibus node start` starts it), and `up` runs
// only the services beside it, on the home's existing identities.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { eventually, freeLoopbackPort, spawnWatched } from "@unibus/testing";
import type { WatchedProcess } from "@unibus/testing";
import { findNatsServer } from "@unibus/natsd";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLUSTER_FILE } from "../src/cluster/convert.js";
import type { ClusterRecord } from "../src/cluster/convert.js";
import { startClusterNode } from "../src/cluster/node.js";
import type { ClusterNode } from "../src/cluster/node.js";
import { resolveHome } from "../src/home.js";
import { isProcessAlive } from "../src/up/lock.js";
import type { HomeLayout } from "../src/home.js";
import { fileExists, provisionHome } from "../src/up/provision.js";
import { homeAuthorization } from "../src/up/server-config.js";
import { ALL_SERVICES, serviceAvailability } from "../src/up/services.js";

const BIN = fileURLToPath(new URL("../bin/unibus.mjs", import.meta.url));
const run = promisify(execFile);
const expected = serviceAvailability().filter((s) => s.available).map((s) => s.name);

async function cli(env: NodeJS.ProcessEnv, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { env, timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number | null; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function writeRecord(home: HomeLayout, record: ClusterRecord): Promise<void> {
  await writeFile(join(home.root, CLUSTER_FILE), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
}

describe("unibus up on an adopted home (services only)", () => {
  let root: string;
  let home: HomeLayout;
  let env: NodeJS.ProcessEnv;
  let node: ClusterNode;
  const nodes: ClusterNode[] = [];
  let record: ClusterRecord;
  const running: WatchedProcess[] = [];

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "unibus-svconly-"));
    const { UNIBUS_URL: _u, UNIBUS_IDENTITY: _i, UNIBUS_MONITOR_PORT: _m, ...rest } = process.env;
    env = { ...rest, UNIBUS_HOME: root };
    home = resolveHome(env, process.cwd());
    // The home as `npm start` left it, then as `node adopt` leaves it: store and key file gone, identities kept.
    const state = await provisionHome(home, ALL_SERVICES);
    await unlink(home.jetstreamKeyFile);
    await rm(home.jetstreamDir, { recursive: true });
    await rm(home.serverDir, { recursive: true });
    const nodeDir = join(root, "node");
    const bin = (await findNatsServer()).bin;
    const listens = [await freeLoopbackPort(), await freeLoopbackPort(), await freeLoopbackPort()].map((p) => `127.0.0.1:${p}`);
    const routesOf = (i: number): string[] => listens.filter((_, j) => j !== i).map((l) => `nats-route://${l}`);
    // Three nodes, as after a promotion: clustered JetStream needs a quorum before it answers.
    const started = await Promise.all(
      ["n1", "n2", "n3"].map(async (name, i) => {
        const nuk = new Uint8Array(randomBytes(32));
        const cuk = new Uint8Array(randomBytes(32));
        return startClusterNode({
          dir: i === 0 ? nodeDir : join(root, name),
          serverName: name,
          clusterName: "svconly",
          listen: listens[i] ?? "",
          routes: routesOf(i),
          port: await freeLoopbackPort(),
          monitorPort: await freeLoopbackPort(),
          config: homeAuthorization(state),
          bin,
          unlock: () => Promise.resolve({ nuk, cuk }),
        });
      }),
    );
    nodes.push(...started);
    node = started[0] as ClusterNode;
    const listen = listens[0] ?? "";
    record = { version: 1, cluster_name: "svconly", server_name: "n1", listen, routes: routesOf(0), replicas: 1, promoted_at: new Date().toISOString(), node_home: nodeDir };
  }, 60_000);

  afterAll(async () => {
    for (const p of running) if (p.child.exitCode === null) p.child.kill("SIGKILL");
    await Promise.all(nodes.map((n) => n.server.stop()));
    await rm(root, { recursive: true, force: true });
  });

  it("still refuses a home whose adoption did not finish, and creates nothing", { timeout: 30_000 }, async () => {
    await writeRecord(home, record);
    const r = await cli(env, "up");
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("unibus node adopt, not finished: run it again");
    expect(await fileExists(home.jetstreamKeyFile)).toBe(false);
    expect(await fileExists(home.jetstreamDir)).toBe(false);
  });

  it("runs every service against the node's server, makes no store key, and admits the admin through the callout", { timeout: 90_000 }, async () => {
    await writeRecord(home, { ...record, adopted_at: new Date().toISOString() });
    const up = spawnWatched(process.execPath, [BIN, "up"], { env, stdin: "ignore", label: "unibus up (services only)" });
    running.push(up);
    await up.waitFor("stdout", /Next: npx unibus micro ls/, 60_000);
    const out = up.output();
    expect(out).toContain("services only: cluster node n1 of svconly (R1)");
    expect(out).toContain(`using nats-server of n1 at ${node.server.url}`);
    // `micro ls` logs in as admin #0 through the callout, then pings every service ($SRV.PING).
    const names = await eventually(
      async () => {
        const r = await cli(env, "micro", "ls", "--json", "--timeout", "1000");
        return r.code === 0 ? (JSON.parse(r.stdout) as { name: string }[]).map((s) => s.name) : [];
      },
      (ls) => expected.every((s) => ls.includes(s)),
      { timeoutMs: 45_000, intervalMs: 300 },
    );
    expect(names).toEqual(expect.arrayContaining(expected));
    // healthz reads the node's monitoring port: its meta-leader check exists only with a monitoring URL.
    const healthzUrl = /^UNIBUS_HEALTHZ_URL=(.*)$/m.exec(await readFile(home.envFile, "utf8"))?.[1] ?? "";
    const report = await eventually(
      async () => (await fetch(`${healthzUrl}/readyz`)).json() as Promise<{ ready: boolean; checks: { name: string; ok: boolean }[] }>,
      (r) => r.ready,
      { timeoutMs: 30_000, intervalMs: 250, what: "readyz ready" },
    );
    expect(report.checks).toContainEqual(expect.objectContaining({ name: "meta_leader", ok: true }));
    // The adoption destroyed the home's key: nothing may bring a disk key back.
    expect(await fileExists(home.jetstreamKeyFile)).toBe(false);
    expect(await fileExists(home.jetstreamDir)).toBe(false);
    expect((await readdir(home.secretsDir)).sort()).toEqual(["callout-issuer.seed", "callout-xkey.seed"]);
    up.child.kill("SIGTERM");
    expect(await up.exited).toBe(0);
    // The node's server is the node's: stopping the services leaves it running.
    expect(isProcessAlive(node.server.pid)).toBe(true);
  });

  it("refuses to start when an identity the cluster names is missing, creating none", { timeout: 30_000 }, async () => {
    await unlink(join(home.identitiesDir, "membership.id"));
    const r = await cli(env, "up");
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("membership.id is missing");
    expect(await fileExists(join(home.identitiesDir, "membership.id"))).toBe(false);
    expect(await fileExists(home.jetstreamKeyFile)).toBe(false);
  });
});
