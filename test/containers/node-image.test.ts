// The unibus/cluster-node image (deploy/scripts/build-images.sh) runs
// `unibus node start` as a container: a fourth node registered on the host
// joins a running three-node cluster through the replica gateway, derives its
// own store key and starts the image's nats-server with it. The key must reach
// that nats-server's environment and nothing else: not the CLI process, not
// any argv, not the container's log or its `docker inspect`. The cluster runs
// on the host (real nats-servers); the container shares the host's network.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Subjects } from "@unibus/contracts";
import type { ReplicaTicketReply } from "@unibus/contracts";
import { nodeStoreKey, toHex, unlockWrappedCuk } from "@unibus/crypto";
import { loadNodeIdentity, readNodeUnlockKey, readWrappedCuk, signedRequest } from "@unibus/sdk";
import type { TestBus } from "@unibus/testbus";
import { eventually, freeLoopbackPort } from "@unibus/testing";
import { startJoinableCluster } from "../e2e/joinable-cluster.js";
import type { JoinableCluster } from "../e2e/joinable-cluster.js";
import { containerProcesses, secretOfFile, secretsIn } from "./secrets.js";

const run = promisify(execFile);
const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CLI = join(REPO_ROOT, "libs/cli/bin/unibus.mjs");
const NODE = "node-4";
/** The containers' user in every unibus image. */
const IMAGE_UID = "10001";
// Overridable so two checkouts on one engine do not remove each other's container.
const CONTAINER = process.env["UNIBUS_CT_NODE_CONTAINER"] ?? "unibus-ct-cluster-node";

async function imageTag(): Promise<string> {
  const env = process.env["UNIBUS_IMAGE_TAG"];
  if (env !== undefined && env !== "") return env;
  return (JSON.parse(await readFile(join(REPO_ROOT, "package.json"), "utf8")) as { version: string }).version;
}

describe("the cluster-node image runs `unibus node start` and the node's nats-server on its own key", () => {
  let cluster: JoinableCluster;
  let bus: TestBus;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let recoverySecret: string;
  let image: string;
  let psk: Uint8Array;

  const cli = (args: string[]) => run(process.execPath, [CLI, ...args], { env, timeout: 60_000 });
  const admin = <T>(subject: string, body: unknown): Promise<T> => signedRequest<T>(bus.admin.nc, bus.adminIdentity.signingKey, subject, body, 15_000);

  /** `node start` in a detached container with the hardening the compose services get; the node home is the bind-mounted /w/home. */
  async function startNodeContainer(monitor: number): Promise<void> {
    await run("docker", ["rm", "-f", CONTAINER]).catch(() => undefined);
    // The container's user owns the node home, as in a named volume (the host CLI wrote it as root); files stay 0600.
    await run("chown", ["-R", `${IMAGE_UID}:${IMAGE_UID}`, dir]);
    await run("docker", [
      ...["run", "-d", "--name", CONTAINER, "--network", "host", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"],
      ...["-v", `${dir}:/w`, "-e", `UNIBUS_URL=${bus.cluster!.urls.join(",")}`, "-e", "UNIBUS_NODE_HOME=/w/home", "-e", "UNIBUS_REPLICA_PSK_FILE=/w/psk"],
      ...["-e", `UNIBUS_HEALTH_URL=http://127.0.0.1:${monitor}/healthz?js-enabled-only=true`],
      image,
      ...["node", "start", "--listen", `127.0.0.1:${await freeLoopbackPort()}`, "--routes", bus.cluster!.routeUrls.join(","), "--port", String(await freeLoopbackPort())],
      ...["--monitor-port", String(monitor), "--bus-config", "/w/bus.json"],
    ]);
  }

  const logsOf = async (): Promise<string> => {
    const r = await run("docker", ["logs", CONTAINER]);
    return `${r.stdout}${r.stderr}`;
  };

  beforeAll(async () => {
    image = `unibus/cluster-node:${await imageTag()}`;
    cluster = await startJoinableCluster("unibus-ct-node-image-", "home");
    ({ bus, psk, dir, env, recoverySecret } = cluster);
    const { ticket } = await admin<ReplicaTicketReply>(Subjects.replicaGateway.ticket, { nodeId: NODE });
    await writeFile(join(dir, "ticket"), ticket, { mode: 0o600 });
    expect((await cli(["node", "register", NODE, "--cluster", bus.cluster!.name, "--ticket-file", join(dir, "ticket")])).stdout).toMatch(/registered as NEW/);
  }, 240_000);

  afterAll(async () => {
    await run("docker", ["rm", "-f", CONTAINER]).catch(() => undefined);
    await cluster?.stop();
  });

  it("refuses to start before the node is approved: the container exits non-zero and no nats-server ran", async () => {
    await startNodeContainer(await freeLoopbackPort());
    const code = (await run("docker", ["wait", CONTAINER], { timeout: 90_000 })).stdout.trim();
    expect(code).not.toBe("0");
    const logs = await logsOf();
    expect(logs).toMatch(/not UP|not_approved/);
    expect(logs).not.toMatch(/node node-4 started/);
  }, 120_000);

  it("once UP, the node joins, its nats-server alone holds the derived key, and none of it shows in inspect, log or argv", async () => {
    await admin(Subjects.replicaGateway.approve, { nodeId: NODE });
    expect((await cli(["node", "commit"])).stdout).toMatch(/is UP/);
    const monitor = await freeLoopbackPort();
    await startNodeContainer(monitor);
    const logs = await eventually(logsOf, (l) => /node node-4 started/.test(l), { timeoutMs: 90_000, intervalMs: 500, what: "node-4 started in its container" });
    // The node's own view: it is in the meta group with the three host nodes.
    const meta = await eventually(
      async () => {
        const res = await fetch(`http://127.0.0.1:${monitor}/jsz`).catch(() => undefined);
        if (res === undefined || !res.ok) return {};
        return ((await res.json()) as { meta_cluster?: { leader?: string; cluster_size?: number } }).meta_cluster ?? {};
      },
      (m) => (m.leader ?? "") !== "" && (m.cluster_size ?? 0) >= 4,
      { timeoutMs: 60_000, intervalMs: 500, what: "node-4 in the meta group" },
    );
    expect(meta.cluster_size).toBeGreaterThanOrEqual(4);

    // The key the node derived, recomputed here from its home and the recovery secret (the same CUK the join returned).
    const home = join(dir, "home");
    const identity = await loadNodeIdentity(home);
    const key = nodeStoreKey(await readNodeUnlockKey(home), unlockWrappedCuk(recoverySecret, await readWrappedCuk(home), NODE, identity.principal));
    const digest = createHash("sha256").update(key).digest("hex");
    const procs = await containerProcesses(CONTAINER);
    const withKey = procs.filter((p) => p.keyDigest !== null);
    expect(withKey.map((p) => [p.argv.split(" ")[0], p.keyDigest === digest ? "expected" : "other"])).toEqual([["/usr/local/bin/nats-server", "expected"]]);
    // The CLI is PID 1 and does not keep the key in its own environment.
    expect(procs.find((p) => p.pid === "1")?.argv).toMatch(/unibus\.mjs node start/);

    const secrets = [secretOfFile("node store key", key), secretOfFile("replica PSK", toHex(psk)), secretOfFile("recovery secret", recoverySecret)];
    expect(secrets.filter((s) => s.forms.length === 0)).toEqual([]);
    const inspect = (await run("docker", ["inspect", CONTAINER])).stdout;
    const seen = new Map([
      ["inspect", inspect],
      ["log", logs],
      ["argv", procs.map((p) => p.argv).join("\n")],
    ]);
    expect(secretsIn(seen, secrets)).toEqual([]);
    // Control: the same scan finds the key when it is there.
    expect(secretsIn(new Map([["planted", `${inspect}${key}`]]), secrets)).toEqual(["planted: node store key"]);

    // The image's healthcheck reads the node's own monitor: healthy once JetStream is up.
    const health = await eventually(
      async () => (await run("docker", ["inspect", "-f", "{{.State.Health.Status}}", CONTAINER])).stdout.trim(),
      (s) => s === "healthy",
      { timeoutMs: 60_000, intervalMs: 1_000, what: "node container healthy" },
    );
    expect(health).toBe("healthy");
  }, 240_000);
});
