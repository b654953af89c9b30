import { mkdtemp, readFile, readdir, rm, stat, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { nodeStoreKey, randomBytes } from "@unibus/crypto";
import { NatsServerStartError, findNatsServer, startNatsServer } from "@unibus/natsd";
import { eventually, freeLoopbackPort } from "@unibus/testing";
import { JETSTREAM_KEY_ENV } from "../up/server-config.js";
import { NodeStartError, NodeStartErrorReason, STORE_CHECK_FILE, clusterNodeConfig, startClusterNode } from "./node.js";
import type { ClusterNode, ClusterNodeOptions, UnlockKeys } from "./node.js";

const BIN = (await findNatsServer({ log: () => undefined })).bin;

let tmp: string;
let started: ClusterNode[];
/** Starts still under way: when one node of a trio fails, the others may finish after the test did. */
let starting: Promise<unknown>[];
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), "unibus-node-"));
  started = [];
  starting = [];
});
afterEach(async () => {
  await Promise.allSettled(starting);
  await Promise.allSettled(started.map((n) => n.server.stop()));
  await rm(tmp, { recursive: true, force: true });
});

/** A one-node cluster (its only route is itself): its own meta leader, so it can store streams. */
async function options(unlock: () => Promise<UnlockKeys>): Promise<ClusterNodeOptions> {
  const listen = `127.0.0.1:${await freeLoopbackPort()}`;
  return {
    dir: join(tmp, "node"),
    serverName: "solo-n1",
    clusterName: "solo",
    listen,
    routes: [`nats-route://${listen}`],
    port: await freeLoopbackPort(),
    bin: BIN,
    unlock,
  };
}

async function start(opts: ClusterNodeOptions): Promise<ClusterNode> {
  const pending = startClusterNode(opts);
  starting.push(pending);
  const node = await pending;
  started.push(node);
  return node;
}

async function listing(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const path = join(e.parentPath, e.name);
    out.push(`${path} ${e.isFile() ? (await stat(path)).size : "dir"}`);
  }
  return out.sort();
}

async function writeStream(url: string, replicas: number): Promise<void> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc, { checkAPI: false });
    // A cold cluster elects its meta leader a few seconds after the nodes start.
    await eventually(
      () => jsm.streams.add({ name: "NODE", subjects: ["node.>"], num_replicas: replicas }).then(() => true, () => false),
      (ok) => ok,
      { timeoutMs: 30_000, what: "a stream created on the node" },
    );
    const js = jetstream(nc);
    for (let i = 0; i < 5; i++) await js.publish("node.x", `payload-${i}`);
  } finally {
    await nc.close();
  }
}

/** Waits until stream NODE holds its 5 messages with both followers current (the restarted node caught up from its own store). */
async function currentEverywhere(url: string): Promise<void> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc, { checkAPI: false });
    await eventually(
      () => jsm.streams.info("NODE").then((i) => i, () => undefined),
      (i) => i?.state.messages === 5 && i.cluster?.replicas?.length === 2 && i.cluster.replicas.every((r) => r.current && !r.offline),
      { timeoutMs: 30_000, what: "NODE current on all three nodes" },
    );
  } finally {
    await nc.close();
  }
}

describe("startClusterNode", () => {
  it("gives nats-server the derived key through its environment only: not in argv, the config file or the store check", async () => {
    const keys = { nuk: randomBytes(32), cuk: randomBytes(32) };
    const node = await start(await options(() => Promise.resolve(keys)));
    const key = nodeStoreKey(keys.nuk, keys.cuk);
    const cmdline = await readFile(`/proc/${node.server.pid}/cmdline`, "utf8");
    expect(cmdline).toContain(node.server.configPath);
    expect(cmdline).not.toContain(key);
    const config = await readFile(node.server.configPath, "utf8");
    expect(config).toContain("$UNIBUS_JS_KEY");
    expect(config).toMatch(/cluster/);
    expect(config).not.toContain(key);
    // It is really there: the server's own environment carries it.
    expect((await readFile(`/proc/${node.server.pid}/environ`, "utf8")).split("\0")).toContain(`UNIBUS_JS_KEY=${key}`);
    const check = join(tmp, "node", STORE_CHECK_FILE);
    expect((await stat(check)).mode & 0o777).toBe(0o600);
    expect(await readFile(check, "utf8")).not.toContain(key.slice(1));
    for (const half of [keys.nuk, keys.cuk]) expect(config + cmdline).not.toContain(Buffer.from(half).toString("hex"));
  });

  it("reopens its store with the same halves, and refuses another CUK or NUK before any server starts", async () => {
    // Three nodes sharing a CUK, each with its own NUK, as after a join; an R3 stream gives node 3 real data.
    const cuk = randomBytes(32);
    const listens = await Promise.all([0, 1, 2].map(async () => `127.0.0.1:${await freeLoopbackPort()}`));
    const nodeOpts = await Promise.all(
      [0, 1, 2].map(async (i): Promise<ClusterNodeOptions> => {
        const nuk = randomBytes(32);
        return {
          dir: join(tmp, `n${i + 1}`),
          serverName: `trio-n${i + 1}`,
          clusterName: "trio",
          listen: listens[i]!,
          routes: listens.filter((_, j) => j !== i).map((l) => `nats-route://${l}`),
          port: await freeLoopbackPort(),
          bin: BIN,
          unlock: () => Promise.resolve({ nuk, cuk }),
        };
      }),
    );
    const nodes = await Promise.all(nodeOpts.map(start));
    await writeStream(nodes[0]!.server.url, 3);
    const third = nodes[2]!;
    await third.server.stop();
    const before = await listing(third.storeDir);
    expect(before.some((l) => l.includes("/streams/NODE/"))).toBe(true);
    const { nuk } = await nodeOpts[2]!.unlock();

    for (const wrong of [{ nuk, cuk: randomBytes(32) }, { nuk: randomBytes(32), cuk }]) {
      const err = await startClusterNode({ ...nodeOpts[2]!, unlock: () => Promise.resolve(wrong) }).then(
        (n) => {
          started.push(n);
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(NodeStartError);
      expect((err as NodeStartError).reason).toBe(NodeStartErrorReason.wrongKey);
      // Nothing touched the store: no server ran on it.
      expect(await listing(third.storeDir)).toEqual(before);
    }

    // Past the check, nats-server itself refuses too: a cluster node's meta log is encrypted, and 2.15.1 exits on it.
    const direct = await startNatsServer({
      config: clusterNodeConfig(nodeOpts[2]!, third.storeDir),
      dir: join(tmp, "n3-direct"),
      bin: BIN,
      env: { [JETSTREAM_KEY_ENV]: nodeStoreKey(nuk, randomBytes(32)) },
    }).then(
      async (s) => {
        await s.stop();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(direct).toBeInstanceOf(NatsServerStartError);
    expect(String((direct as Error).message)).toMatch(/message authentication failed/);

    const again = await start(nodeOpts[2]!);
    await currentEverywhere(nodes[0]!.server.url);
    expect(await readFile(again.server.logPath, "utf8")).not.toMatch(/decrypt/i);
  }, 90_000);

  it("refuses a store with data but no store check, and a failed unlock", async () => {
    const keys = { nuk: randomBytes(32), cuk: randomBytes(32) };
    const opts = await options(() => Promise.resolve(keys));
    const node = await start(opts);
    await node.server.stop();
    await unlink(join(tmp, "node", STORE_CHECK_FILE));
    await expect(startClusterNode(opts)).rejects.toMatchObject({ reason: NodeStartErrorReason.uncheckedStore });
    await expect(startClusterNode({ ...opts, unlock: () => Promise.reject(new Error("join refused: not approved")) })).rejects.toMatchObject({
      reason: NodeStartErrorReason.unlockFailed,
      message: expect.stringContaining("not approved") as unknown,
    });
    await expect(startClusterNode({ ...opts, unlock: () => Promise.resolve({ nuk: randomBytes(16), cuk: keys.cuk }) })).rejects.toMatchObject({
      reason: NodeStartErrorReason.unlockFailed,
    });
  });
});
