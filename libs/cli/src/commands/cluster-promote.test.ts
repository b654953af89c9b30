import { readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { findNatsServer } from "@unibus/natsd";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { CLUSTER_FILE, STANDALONE_SUFFIX, clusteredBusConfig } from "../cluster/convert.js";
import { PromoteError, PromoteErrorReason, planPromotion, waitForCurrentReplicas } from "../cluster/promote.js";
import type { HomeLayout } from "../home.js";
import { startMaintenanceServer } from "../store/maintenance.js";
import { runCliRecorded, tempCliHome } from "../test-home.js";
import { generateJetStreamKey, provisionHome } from "../up/provision.js";
import { writeNewKeyFile } from "../store/operations.js";

const BIN = (await findNatsServer({ log: () => undefined })).bin;
const ROUTES = "nats-route://127.0.0.1:1,nats-route://127.0.0.1:2";

let tmp: string;
let home: HomeLayout;
let env: Record<string, string>;
beforeEach(async () => {
  ({ tmp, home, env } = await tempCliHome("unibus-cluster-cli-", () => ({ NATS_SERVER_BIN: BIN })));
  return () => rm(tmp, { recursive: true, force: true });
});
const cli = (...argv: string[]): Promise<{ code: number; out: string }> => runCliRecorded(argv, { env, cwd: tmp });

describe("unibus cluster promote", () => {
  it("refuses a wrong command line with a usage error (exit 2) and touches nothing", async () => {
    const base = ["cluster", "promote", "--cluster", "c", "--server-name", "n1", "--listen", "127.0.0.1:6222"];
    for (const [argv, why] of [
      [[...base], /--routes is required/],
      [[...base, "--routes", "nats-route://127.0.0.1:1"], /at least two other nodes/],
      [[...base, "--routes", "http://x:1,nats-route://y:2"], /at least two other nodes/],
      [["cluster", "promote", "--cluster", "c", "--server-name", "n1", "--listen", "nowhere", "--routes", ROUTES], /HOST:PORT/],
      [[...base, "--routes", ROUTES, "--replicas", "7"], /1 to 5/],
      [[...base, "--routes", ROUTES, "--route-cert", "a.pem"], /go together/],
    ] as const) {
      const { code, out } = await cli(...argv);
      expect(code, out).toBe(2);
      expect(out).toMatch(why);
    }
    await expect(readdir(home.root)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("--dry-run on a single-node home lists every stream it would raise and changes nothing", async () => {
    const state = await provisionHome(home, []);
    const m = await startMaintenanceServer({ bin: BIN, storeDir: home.jetstreamDir, workDir: join(tmp, "seed"), keys: { key: state.jetstreamKey } });
    try {
      const jsm = await jetstreamManager(m.nc);
      await jsm.streams.add({ name: "ORDERS", subjects: ["orders.>"] });
      await jetstream(m.nc).publish("orders.1", "one");
      await (await new Kvm(m.nc).create("settings")).put("k", "v");
    } finally {
      await m.stop();
    }
    const before = await readdir(home.root);
    const { code, out } = await cli("cluster", "promote", "--dry-run", "--cluster", "c", "--server-name", "n1", "--listen", "127.0.0.1:6222", "--routes", ROUTES);
    expect(code, out).toBe(0);
    expect(out).toContain("would raise KV_settings (kv): R1 -> R3");
    expect(out).toContain("would raise ORDERS (stream): R1 -> R3");
    expect(out).toContain("dry run: 2 of 2 streams would be raised; nothing changed");
    expect(out).not.toContain(state.jetstreamKey);
    const after = await readdir(home.root);
    expect(after).not.toContain(CLUSTER_FILE);
    expect(after).not.toContain(`data${STANDALONE_SUFFIX}`);
    expect(after.sort()).toEqual(before.sort());
  });
});

describe("a promotion that cannot finish never leaves an empty bus behind", () => {
  it("a key that does not open the store stops the promotion before the store moves", async () => {
    const state = await provisionHome(home, []);
    const m = await startMaintenanceServer({ bin: BIN, storeDir: home.jetstreamDir, workDir: join(tmp, "seed"), keys: { key: state.jetstreamKey } });
    try {
      await (await jetstreamManager(m.nc)).streams.add({ name: "ORDERS", subjects: ["orders.>"] });
    } finally {
      await m.stop();
    }
    await rm(home.jetstreamKeyFile);
    await writeNewKeyFile(home.jetstreamKeyFile, generateJetStreamKey());
    const { code, out } = await cli("cluster", "promote", "--cluster", "c", "--server-name", "n1", "--listen", "127.0.0.1:6222", "--routes", ROUTES);
    expect(code, out).toBe(1);
    expect(out).toMatch(/1 of 1 streams .* cannot be opened with the JetStream key/);
    const after = await readdir(home.root);
    expect(after).toContain("data");
    expect(after).not.toContain(`data${STANDALONE_SUFFIX}`);
    expect(after).not.toContain("cluster-promote");
  });

  it("up refuses to start while the store is aside from an unfinished promotion", async () => {
    await provisionHome(home, []);
    await rename(home.jetstreamDir, `${home.jetstreamDir}${STANDALONE_SUFFIX}`);
    const { code, out } = await cli("up");
    expect(code, out).toBe(1);
    expect(out).toContain("`unibus cluster promote` did not finish");
    expect(await readdir(home.root)).not.toContain("data");
  });
});

describe("unibus cluster promote on a converted home", () => {
  it("refuses options that name another cluster or node than cluster.json records, and changes nothing", async () => {
    await provisionHome(home, []);
    const record = { version: 1, cluster_name: "prod", server_name: "n1", listen: "127.0.0.1:6222", routes: ROUTES.split(","), replicas: 3, promoted_at: "2026-12-04T00:00:00.000Z" };
    await writeFile(join(home.root, CLUSTER_FILE), JSON.stringify(record));
    const before = await readdir(home.root);
    const { code, out } = await cli("cluster", "promote", "--cluster", "other", "--server-name", "n1", "--listen", "127.0.0.1:6222", "--routes", ROUTES);
    expect(code, out).toBe(1);
    expect(out).toContain("says this home is n1 in cluster prod, not n1 in other: nothing was changed");
    expect((await readdir(home.root)).sort()).toEqual(before.sort());
    await writeFile(join(home.root, CLUSTER_FILE), "{ not json");
    const damaged = await cli("cluster", "promote", "--cluster", "prod", "--server-name", "n1", "--listen", "127.0.0.1:6222", "--routes", ROUTES);
    expect(damaged.code, damaged.out).toBe(1);
    expect(damaged.out).toContain("is damaged: not JSON");
  });
});

describe("promotion checks", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("refuses a replica count outside 1..5", async () => {
    const nc = await server.connect();
    try {
      for (const n of [0, 6, 2.5]) await expect(planPromotion(nc, n)).rejects.toMatchObject({ reason: PromoteErrorReason.badReplicas });
    } finally {
      await nc.close();
    }
  });

  it("never reports success while a stream has fewer current replicas than asked", async () => {
    const nc = await server.connect();
    try {
      await (await jetstreamManager(nc)).streams.add({ name: "LONELY", subjects: ["lonely"] });
      const err = await waitForCurrentReplicas(nc, ["LONELY"], 3, 500).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PromoteError);
      expect((err as PromoteError).reason).toBe(PromoteErrorReason.notCurrent);
      expect((err as PromoteError).message).toContain("LONELY (R1");
      // At the replica count it has, it is current.
      expect(await waitForCurrentReplicas(nc, ["LONELY"], 1, 5_000)).toMatchObject([{ stream: "LONELY", replicas: 1, current: 0 }]);
    } finally {
      await nc.close();
    }
  });
});

describe("clusteredBusConfig", () => {
  it("adds the recorded cluster block, fsync before ack and route TLS to the bus config", () => {
    const config = clusteredBusConfig(
      { server_name: "unibus-local", port: 4222, jetstream: { store_dir: "/d", cipher: "chachapoly" } },
      {
        version: 1,
        cluster_name: "prod",
        server_name: "n1",
        listen: "0.0.0.0:6222",
        routes: ["nats-route://n2:6222", "nats-route://n3:6222"],
        replicas: 3,
        route_tls: { cert_file: "/t/n1.pem", key_file: "/t/n1.key", ca_file: "/t/ca.pem" },
        promoted_at: "2026-12-04T00:00:00.000Z",
      },
    );
    expect(config).toMatchObject({
      server_name: "n1",
      port: 4222,
      jetstream: { store_dir: "/d", cipher: "chachapoly", sync_interval: "always" },
      cluster: { name: "prod", listen: "0.0.0.0:6222", routes: ["nats-route://n2:6222", "nats-route://n3:6222"], tls: { cert_file: "/t/n1.pem", verify: true } },
    });
  });
});
