import { execFile } from "node:child_process";
import { once } from "node:events";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import type { Socket} from "node:net";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import type { TLSSocket } from "node:tls";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { createIdentity, nodeStoreKey, randomBytes, toHex, unlockWrappedCuk, writeIdentityFile } from "@unibus/crypto";
import { connect, loadNodeIdentity, readNodeClusterInfo, readNodeUnlockKey, readWrappedCuk } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { retryUntil } from "@unibus/testing";
import { containerOutputs, containerProcesses, inspectContainers, readStackSecrets, secretOfBytes, secretOfFile, secretsIn, withCopyOf } from "./secrets.js";
import type { StackSecret } from "./secrets.js";
import { startComposeStack } from "./stack.js";
import type { ComposeStack } from "./stack.js";

const run = promisify(execFile);
const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
// Overridable so two checkouts on one engine do not stop each other's stack.
const PROJECT = process.env["UNIBUS_CT_CLUSTER_PROJECT"] ?? "unibus-ct-cluster";
const ROUTE_PORT = 6222;
const CLI = join(REPO_ROOT, "libs/cli/bin/unibus.mjs");

/** Retries `fn` until it resolves or `ms` pass (failover: reconnect, new stream leaders). */
const eventually = <T>(ms: number, fn: () => Promise<T>): Promise<T> => retryUntil(fn, { timeoutMs: ms });

/** Reads the node's first line (INFO) off a route connection. */
async function readInfo(sock: Socket | TLSSocket): Promise<Record<string, unknown>> {
  let buf = "";
  while (!buf.includes("\r\n")) {
    const [chunk] = (await once(sock, "data")) as [Buffer];
    buf += chunk.toString("latin1");
  }
  const line = buf.slice(0, buf.indexOf("\r\n"));
  expect(line.startsWith("INFO ")).toBe(true);
  return JSON.parse(line.slice(5)) as Record<string, unknown>;
}

/** Resolves with what the peer sent before the connection ended (or after `ms`, if it stays open). */
async function drain(sock: Socket, ms: number): Promise<{ data: string; closed: boolean }> {
  let data = "";
  sock.on("data", (c: Buffer) => (data += c.toString("latin1")));
  let ended = false;
  sock.once("close", () => (ended = true));
  sock.once("error", () => (ended = true));
  // Bounded: a peer that keeps the connection open shows as closed: false.
  const closed = await retryUntil(async () => (ended ? true : Promise.reject(new Error("open"))), { timeoutMs: ms, intervalMs: 20 }).catch(() => false);
  sock.destroy();
  return { data, closed };
}

const NODES = ["nats-1", "nats-2", "nats-3"] as const;

/** The message of a connect that must fail (a resolved connect fails the test). */
async function connectError(fn: () => Promise<UnibusClient>): Promise<string> {
  return fn().then(
    async (c) => {
      await c.close();
      throw new Error("connected although it must not");
    },
    (err: unknown) => String((err as Error).message ?? err),
  );
}

describe("the 3-node cluster (docker-compose.cluster.yml) in real Docker", () => {
  let stack: ComposeStack;
  let certs: string;
  let admin: UnibusClient;
  /** The client port requires TLS: `tls://` seeds, and the client CA cluster-certs.sh made. */
  let urls: string[];
  let tls: { caFile: string };
  const clients: UnibusClient[] = [];
  const acked: string[] = [];
  /** Written once by the stack's `enroll` one-shot into the host's recovery directory (0600). */
  let recoverySecret: string;
  let recoveryFile: string;
  /** Per node: its unlock key, join key and PSK copy, and the store key recomputed from them (secrets the scan looks for). */
  const nodeSecrets: StackSecret[] = [];
  const container = (svc: string) => `${PROJECT}-${svc}-1`;

  /** The host CLI as the stack's admin over TLS (identity file in `dir`): stdout, or a rejection with its stderr. */
  async function adminCli(dir: string): Promise<(args: string[]) => Promise<string>> {
    await writeIdentityFile(join(dir, "admin.id"), stack.admin);
    const env: NodeJS.ProcessEnv = { ...process.env, UNIBUS_URL: urls.join(","), UNIBUS_TLS_CA: tls.caFile, UNIBUS_IDENTITY: join(dir, "admin.id") };
    return (args) =>
      run(process.execPath, [CLI, ...args], { env, timeout: 60_000 }).then(
        (r) => r.stdout,
        (err: unknown) => Promise.reject(new Error(String((err as { stderr?: string }).stderr ?? err))),
      );
  }

  /** Waits until the gateway answers lifecycle requests with "no seed" (after a restart, before `cluster recover`). */
  function untilSeedLocked(cli: (args: string[]) => Promise<string>, ms: number): Promise<string> {
    return eventually(ms, async () => {
      const outcome = await cli(["node", "list"]).then(
        () => "answered",
        (err: unknown) => (err as Error).message,
      );
      if (!/does not hold the cluster seed/.test(outcome)) throw new Error(`not locked yet: ${outcome}`);
      return outcome;
    });
  }

  async function routeAddress(node: string): Promise<string> {
    const { stdout } = await run("docker", ["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container(node)]);
    return stdout.trim();
  }

  beforeAll(async () => {
    // Route TLS material made on the host by the project's script, outside the repo, removed after.
    certs = await mkdtemp(join(tmpdir(), "unibus-ct-tls-"));
    await run(join(REPO_ROOT, "deploy/scripts/cluster-certs.sh"), [certs], { cwd: REPO_ROOT });
    stack = await startComposeStack({
      project: PROJECT,
      file: "docker-compose.cluster.yml",
      ports: ["UNIBUS_DOCKER_PORT_1", "UNIBUS_DOCKER_PORT_2", "UNIBUS_DOCKER_PORT_3"],
      environment: { UNIBUS_CLUSTER_TLS_DIR: certs, UNIBUS_IMAGE_TAG: process.env["UNIBUS_IMAGE_TAG"] ?? "0.1.0" },
      // enroll ends once all three nodes run on their own keys (a rolling rebuild).
      oneShots: ["enroll"],
      startupTimeoutMs: 480_000,
    });
    process.stdout.write(`cluster stack healthy in ${stack.secondsToHealthy.toFixed(1)} s\n`);
    recoveryFile = join(certs, "recovery", "recovery.secret");
    recoverySecret = (await readFile(recoveryFile, "utf8")).trim();
    urls = stack.urls.map((u) => u.replace(/^nats:/, "tls:"));
    tls = { caFile: join(certs, "client-ca", "ca.pem") };
    // All three seeds: the client fails over as nodes go away.
    admin = await connect({ servers: urls, identity: stack.admin, requestTimeoutMs: 8_000, tls });
    clients.push(admin);
    // The first up includes the enrollment and three rolling rebuilds (about 2.5 min by hand on 2 busy cores).
  }, 540_000);

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await stack?.stop();
    if (certs) await rm(certs, { recursive: true, force: true });
  });

  it("every container runs as uid 10001 and the three nodes are healthy", async () => {
    const ids = (await run("docker", ["ps", "-q", "--filter", `label=com.docker.compose.project=${PROJECT}`])).stdout.split("\n").filter(Boolean);
    expect(ids.length).toBe(9);
    const { stdout } = await run("docker", ["inspect", "-f", "{{.Config.User}} {{.State.Health.Status}}", ...ids]);
    for (const line of stdout.trim().split("\n")) expect(line).toBe("10001:10001 healthy");
  });

  it("each node runs on its own derived store key, held only by its nats-server, and the bootstrap key is gone", async () => {
    const hashes = new Map<string, string>();
    for (const node of NODES) {
      // nats-server runs as `node start`'s child and logs to the node home, not to docker logs.
      const log = (await run("docker", ["exec", container(node), "/usr/local/bin/node", "-e", "process.stdout.write(require('fs').readFileSync('/node/server/nats-server.log','utf8'))"], { maxBuffer: 64 * 1024 * 1024 })).stdout;
      expect(log).toMatch(/Encryption:\s+ChaCha20-Poly1305/);
      const env = (await run("docker", ["inspect", "-f", "{{json .Config.Env}} {{json .Config.Cmd}}", container(node)])).stdout;
      expect(env).not.toMatch(/UNIBUS_JS_KEY/);
      const procs = await containerProcesses(container(node));
      const withKey = procs.filter((p) => p.keyDigest !== null);
      // Exactly one process holds a key: the node's nats-server (the boot step and the CLI do not).
      expect(withKey.map((p) => p.argv.split(" ")[0])).toEqual(["/usr/local/bin/nats-server"]);
      // The key is the one derived from this node's home (NUK) and its CUK (opened here with the recovery secret).
      const expected = await withCopyOf(container(node), "/node", async (home) => {
        const info = await readNodeClusterInfo(home);
        expect(info.nodeId).toBe(node);
        const identity = await loadNodeIdentity(home);
        const nuk = await readNodeUnlockKey(home);
        const key = nodeStoreKey(nuk, unlockWrappedCuk(recoverySecret, await readWrappedCuk(home), node, identity.principal));
        nodeSecrets.push(secretOfBytes(`${node} nuk`, nuk), secretOfFile(`${node} node.key`, await readFile(join(home, "node.key"), "utf8")), secretOfFile(`${node} store key`, key));
        return createHash("sha256").update(key).digest("hex");
      });
      expect(withKey[0]!.keyDigest).toBe(expected);
      hashes.set(node, expected);
    }
    // Three nodes, three keys: no node's disk opens another's store.
    expect(new Set(hashes.values()).size).toBe(3);
    // The bootstrap key is destroyed once every node is adopted, in the state volume and in every node's share.
    const left = await withCopyOf(`${PROJECT}-init-1`, "/state", async (dir) => readFile(join(dir, "secrets", "jetstream.key")).then(() => "present", () => "gone"));
    expect(left).toBe("gone");
  });

  it("the gateway holds the stack's PSK: cluster init, then a node goes ticket → register → approve → commit → join, and the history shows it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "unibus-ct-node-"));
    try {
      // What a node operator copies out of the state volume over a private channel.
      await run("docker", ["cp", `${PROJECT}-init-1:/state/secrets/replica.psk`, join(dir, "replica.psk")]);
      await chmod(join(dir, "replica.psk"), 0o600);
      await writeIdentityFile(join(dir, "admin.id"), stack.admin);
      const env: NodeJS.ProcessEnv = { ...process.env, UNIBUS_URL: urls.join(","), UNIBUS_TLS_CA: tls.caFile, UNIBUS_IDENTITY: join(dir, "admin.id"), UNIBUS_NODE_HOME: join(dir, "node"), UNIBUS_REPLICA_PSK_FILE: join(dir, "replica.psk") };
      delete env["UNIBUS_REPLICA_PSK"];
      const cli = async (args: string[], extra: NodeJS.ProcessEnv = {}): Promise<string> => (await run(process.execPath, [CLI, ...args], { env: { ...env, ...extra }, timeout: 60_000 })).stdout;
      const ticket = (JSON.parse(await cli(["node", "ticket", "node-4", "--json"])) as { ticket: string }).ticket;
      await writeFile(join(dir, "ticket"), ticket, { mode: 0o600 });
      // A PSK other than the stack's is refused before the ticket is even looked at.
      await writeFile(join(dir, "wrong.psk"), toHex(randomBytes(32)), { mode: 0o600 });
      const wrong = await cli(["node", "register", "node-4", "--cluster", "unibus", "--ticket-file", join(dir, "ticket"), "--home", join(dir, "other")], { UNIBUS_REPLICA_PSK_FILE: join(dir, "wrong.psk") }).then(
        () => "registered",
        (err: unknown) => String((err as { stderr?: string }).stderr ?? err),
      );
      expect(wrong).toMatch(/refused the handshake/);
      expect(await cli(["node", "register", "node-4", "--cluster", "unibus", "--ticket-file", join(dir, "ticket")])).toMatch(/registered as NEW/);
      expect(await cli(["node", "approve", "node-4"])).toMatch(/STANDBY/);
      expect(await cli(["node", "commit"])).toMatch(/is UP/);
      expect(await cli(["node", "join"])).not.toBe("");
      const history = JSON.parse(await cli(["cluster", "history", "--verify", "--json"])) as { verified: boolean; entries: { type: string; effect: string }[] };
      expect(history.verified).toBe(true);
      // The stack's own three nodes came up through the same flow (the enroll one-shot), in order.
      for (const node of NODES) expect(history.entries.filter((e) => e.effect.includes(`"${node}"`)).map((e) => e.type)).toEqual(["node.register", "node.approve", "node.commit"]);
      expect(history.entries.filter((e) => e.effect.includes("node-4")).map((e) => e.type)).toEqual(["node.register", "node.approve", "node.commit"]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("no secret (state volume, CA and node TLS keys) is in any container's docker inspect, log or process argv, in any encoding", async () => {
    const tlsKeys = ["ca/route-ca.key", "ca/client-ca.key", ...["nats-1", "nats-2", "nats-3"].flatMap((n) => [`${n}/node.key`, `${n}/client.key`])].map((f) => join(certs, f));
    // The node secrets are read by the key test above (it runs first).
    expect(nodeSecrets.map((s) => s.source)).toEqual(NODES.flatMap((n) => [`${n} nuk`, `${n} node.key`, `${n} store key`]));
    const secrets = [...(await readStackSecrets(PROJECT, tlsKeys)), secretOfFile("recovery secret", recoverySecret), ...nodeSecrets];
    expect(secrets.map((s) => s.source)).toEqual(expect.arrayContaining(["secrets/callout-issuer.seed", "secrets/replica.psk", "admin.id", "recovery secret", ...tlsKeys]));
    expect(secrets.filter((s) => s.forms.length === 0)).toEqual([]);
    const docs = await inspectContainers(PROJECT);
    expect(docs.size).toBe(12);
    expect(secretsIn(docs, secrets)).toEqual([]);
    // Nor in any container's log, nor in the argv of any process running in one.
    const { logs, argv } = await containerOutputs(PROJECT);
    expect(logs.size).toBe(docs.size);
    expect([...argv.values()].join("\n")).toMatch(/nats-server/);
    expect(secretsIn(logs, secrets)).toEqual([]);
    expect(secretsIn(argv, secrets)).toEqual([]);
    // Control: a node key's PEM line in a label is found.
    const [name, doc] = [...docs][0]!;
    const nodeKey = secrets.find((s) => s.source.endsWith("nats-1/node.key"))!;
    expect(secretsIn(new Map([[name, doc.replace('"Labels":{', `"Labels":{"leak":"${nodeKey.forms[0]!}",`)]]), secrets)).toEqual([`${name}: ${nodeKey.source}`]);
    // Control for the binary secrets: a node unlock key's hex in a log line is found.
    const nuk = nodeSecrets.find((s) => s.source === "nats-2 nuk")!;
    expect(secretsIn(new Map([["planted", `${[...logs.values()][0]!}\nnuk=${nuk.forms[0]!}\n`]]), secrets)).toEqual(["planted: nats-2 nuk"]);
  });

  it("routes are mutual TLS: plain TCP and a TLS client without a route-CA cert are refused, a node cert is accepted", async () => {
    const ip = await routeAddress("nats-1");
    expect(ip).toMatch(/^\d+\.\d+\.\d+\.\d+$/);

    // With route TLS the accepting node starts with the TLS handshake: nothing is said in
    // plaintext, and a plaintext CONNECT/PING is dropped without an INFO or a PONG.
    const plain = tcpConnect(ROUTE_PORT, ip);
    await once(plain, "connect");
    plain.write('CONNECT {"verbose":false,"pedantic":false,"name":"intruder"}\r\nPING\r\n');
    const plainEnd = await drain(plain, 5_000);
    expect(plainEnd.data).not.toMatch(/INFO|PONG/);
    expect(plainEnd.closed).toBe(true);

    const ca = await readFile(join(certs, "ca", "route-ca.pem"));
    // TLS trusting the route CA but without a client certificate: the node rejects it (mutual TLS).
    const anon = tlsConnect({ host: ip, port: ROUTE_PORT, ca, servername: "nats-1" });
    anon.on("error", () => undefined);
    const anonEnd = await drain(anon, 5_000);
    expect(anonEnd.data).not.toMatch(/INFO|PONG/);
    expect(anonEnd.closed).toBe(true);

    // Control: nats-2's route cert (serverAuth+clientAuth, same route CA) completes mutual TLS
    // and the node then speaks the route protocol (INFO).
    const peer = tlsConnect({
      host: ip,
      port: ROUTE_PORT,
      ca,
      servername: "nats-1",
      cert: await readFile(join(certs, "nats-2", "node.pem")),
      key: await readFile(join(certs, "nats-2", "node.key")),
    });
    await once(peer, "secureConnect");
    expect(peer.authorized).toBe(true);
    expect(peer.getPeerCertificate().subjectaltname).toBe("DNS:nats-1");
    const info = await readInfo(peer);
    expect(info["tls_required"]).toBe(true);
    peer.destroy();
  });

  it("the client port requires TLS: a plaintext CONNECT is refused, and only the client CA vouches for the node", async () => {
    // A plaintext client gets the INFO (tls_required); the node then expects a TLS handshake,
    // so the plaintext CONNECT/PING ends the connection with no PONG. Every node.
    for (const url of stack.urls) {
      const plain = tcpConnect(Number(new URL(url).port), "127.0.0.1");
      const info = await readInfo(plain);
      expect(info["tls_required"]).toBe(true);
      plain.write('CONNECT {"verbose":false,"pedantic":false,"name":"plaintext"}\r\nPING\r\n');
      const plainEnd = await drain(plain, 5_000);
      expect(plainEnd.data).not.toMatch(/PONG|\+OK/);
      expect(plainEnd.closed).toBe(true);
    }

    // The route CA does not vouch for the client port (the two CAs are separate), and
    // without a CA the node's certificate is not trusted: both connects fail, never plaintext.
    const wrongCa = connectError(() => connect({ servers: [urls[0]!], identity: createIdentity(), tls: { caFile: join(certs, "ca", "route-ca.pem") } }));
    const noCa = connectError(() => connect({ servers: [urls[0]!], identity: createIdentity() }));
    expect(await wrongCa).toMatch(/certificate|self.signed|issuer/i);
    expect(await noCa).toMatch(/certificate|self.signed|issuer/i);
    // The control (the client CA is accepted) is the next test and every other one here.
  });

  it("/healthz reports the cluster's own posture from the nodes' monitoring ports, not nulls", async () => {
    const posture = await eventually(30_000, async () => {
      const res = await fetch(`${stack.healthzUrl}/healthz`);
      const body = (await res.json()) as { server_version: string | null; mode: string | null; cluster_size: number | null; meta_leader: string | null; tls: { client: boolean | null; route: boolean | null }; sync_policy: string | null; at_rest: { encrypted: boolean | null } };
      if (body.meta_leader === null) throw new Error(`no meta leader yet: ${JSON.stringify(body)}`);
      return body;
    });
    expect(posture).toMatchObject({ mode: "cluster", cluster_size: 3, tls: { client: true, route: true }, sync_policy: "always", at_rest: { encrypted: true } });
    expect(posture.server_version).toMatch(/^2\.\d+\.\d+/);
    expect(["nats-1", "nats-2", "nats-3"]).toContain(posture.meta_leader);
  });

  it("a new user logs in over TLS and a signed request is answered through the cluster", async () => {
    const member = createIdentity();
    await admin.users.add(member.principal, `tls-${member.principal.slice(1, 7).toLowerCase()}`, "member");
    acked.push(member.principal);
    // Each seed on its own: every node's client port takes the login over TLS.
    for (const url of urls) {
      const c = await eventually(15_000, () => connect({ servers: [url], identity: member, requestTimeoutMs: 8_000, tls }));
      try {
        expect(c.principal).toBe(member.principal);
        // Signed with the member's key and checked by membership (itself on tls://): a new user has no rooms.
        const listed = await c.rooms.list();
        expect(listed.rooms).toEqual([]);
      } finally {
        await c.close();
      }
    }
  });

  it("users added before nats-1 stops are all readable with 2 of 3 nodes, and the bus keeps serving", async () => {
    for (let i = 0; i < 8; i++) {
      const id = createIdentity();
      await admin.users.add(id.principal, `c${i}-${id.principal.slice(1, 7).toLowerCase()}`, "member");
      acked.push(id.principal);
    }
    await run("docker", ["stop", "-t", "5", container("nats-1")]);
    const listed = await eventually(45_000, async () => new Set((await admin.users.list()).users.map((u) => u.principal)));
    expect(acked.filter((p) => !listed.has(p))).toEqual([]);
    // Still serving writes: quorum is 2 of 3.
    const late = createIdentity();
    await eventually(45_000, () => admin.users.add(late.principal, `late-${late.principal.slice(1, 7).toLowerCase()}`, "member"));
    acked.push(late.principal);
    const after = await eventually(30_000, async () => new Set((await admin.users.list()).users.map((u) => u.principal)));
    expect(acked.filter((p) => !after.has(p))).toEqual([]);
  });

  it("with 2 of 3 nodes stopped a mutating request fails closed (error or timeout, never an ack)", async () => {
    await run("docker", ["stop", "-t", "5", container("nats-2")]);
    // Either the admin's session is on nats-3 and the request meets membership there (503:
    // no quorum for the R3 bucket), or the session dropped and cannot log in again (the
    // callout reads the directory, which has no quorum either): both must refuse.
    // The write is tried once the survivor itself reports the lost quorum (readiness
    // fails closed), not after a guessed pause: the operator's view and the refusal agree.
    const status = await eventually(30_000, async () => {
      const res = await fetch(`${stack.healthzUrl}/readyz`);
      if (res.status !== 503) throw new Error(`readyz ${res.status} with 1 of 3 nodes`);
      return res.status;
    });
    expect(status).toBe(503);
    const bob = createIdentity();
    const t0 = Date.now();
    const outcome = await admin.users
      .add(bob.principal, `bob-${bob.principal.slice(1, 7).toLowerCase()}`, "member")
      .then(
        () => "acknowledged",
        (err: unknown) => `refused: ${(err as Error).message}`,
      );
    process.stdout.write(`users.add with 1 of 3 nodes: ${outcome} (${Date.now() - t0} ms)\n`);
    expect(outcome).toMatch(/^refused: /);
  });

  it("after both nodes restart the cluster catches up: every acknowledged user is there and writes work again", async () => {
    // With 2 of 3 nodes down the gateway's buckets have no quorum, so no join can be answered:
    // the two come back as in a cold start, with the operator's recovery secret mounted for this start only.
    await stack.compose(["up", "-d", "--no-deps", "--force-recreate", "nats-1", "nats-2"], { UNIBUS_RECOVERY_SECRET_FILE: recoveryFile });
    // A new session: the old one may have given up reconnecting while logins were refused.
    const again = await eventually(60_000, () => connect({ servers: urls, identity: stack.admin, requestTimeoutMs: 8_000, tls }));
    clients.push(again);
    const fresh = createIdentity();
    await eventually(60_000, () => again.users.add(fresh.principal, `back-${fresh.principal.slice(1, 7).toLowerCase()}`, "member"));
    acked.push(fresh.principal);
    // Reads may answer 503 for a moment while stream leaders settle after the restart.
    const listed = await eventually(30_000, async () => new Set((await again.users.list()).users.map((u) => u.principal)));
    expect(acked.filter((p) => !listed.has(p))).toEqual([]);
    const ready = await eventually(60_000, async () => {
      const res = await fetch(`${stack.healthzUrl}/readyz`);
      if (res.status !== 200) throw new Error(`readyz ${res.status} after recovery`);
      return res.status;
    });
    expect(ready).toBe(200);
  });

  it("a restarted gateway holds no seed until cluster recover; then a node recreated without the secret joins through it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "unibus-ct-recover-"));
    try {
      const cli = await adminCli(dir);
      // The only gateway replica restarts: no peer holds the seed, as after a full down/up.
      await run("docker", ["restart", "-t", "5", container("replica-gateway")]);
      expect(await untilSeedLocked(cli, 90_000)).toMatch(/does not hold the cluster seed/);
      // The operator's step of the cold start: the recovery secret hands the gateway the seed.
      expect(await cli(["cluster", "recover", "--secret-file", recoveryFile])).toMatch(/cluster seed accepted/);
      const listed = JSON.parse(await eventually(30_000, () => cli(["node", "list", "--json"]))) as { nodes: { nodeId: string; state: string }[] };
      expect(NODES.map((n) => listed.nodes.find((x) => x.nodeId === n)?.state)).toEqual(["UP", "UP", "UP"]);
      // Back onto the join: nats-1, recreated without the secret (the compose default), joins through the gateway.
      // --force-recreate: compose does not count a changed secret source as a change of the service.
      await stack.compose(["up", "-d", "--no-deps", "--force-recreate", "--wait", "nats-1"]);
      const { stdout } = await run("docker", ["logs", container("nats-1")]);
      expect(stdout).toMatch(/node start: joining through a peer/);
      expect(stdout).toMatch(/node nats-1 started/);
      const mounts = (await run("docker", ["inspect", "-f", "{{json .HostConfig.Mounts}} {{json .HostConfig.Binds}}", container("nats-1")])).stdout;
      expect(mounts).not.toContain(recoveryFile);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  // The runbook's "Cold start" as an operator runs it: every container goes
  // (volumes kept), the stack comes back with the recovery secret mounted for
  // that start only, the gateway takes the seed from `cluster recover`, and
  // each node is then recreated without the secret and joins through its peers.
  it("a full down and up (volumes kept) comes back with the recovery secret: nothing acknowledged is lost, and each node then rejoins without the secret", async () => {
    const dir = await mkdtemp(join(tmpdir(), "unibus-ct-cold-"));
    try {
      const cli = await adminCli(dir);
      // The verified head before the cold start: the history after it must extend it, never roll it back.
      const head = /history verified: \d+ entries, head (\d+:[A-Za-z0-9_-]+)/.exec(await cli(["cluster", "history", "--verify"]))?.[1];
      expect(head).toBeDefined();
      const t0 = Date.now();
      await stack.compose(["down", "-t", "20"]);
      const left = (await run("docker", ["ps", "-aq", "--filter", `label=com.docker.compose.project=${PROJECT}`])).stdout.trim();
      expect(left).toBe("");
      // Not --wait: it would also wait on the one-shots, which have no healthcheck.
      await stack.compose(["up", "-d", "--force-recreate"], { UNIBUS_RECOVERY_SECRET_FILE: recoveryFile });
      // Until `cluster recover` the gateway holds no seed: the nodes opened their stores with the secret, not a join.
      expect(await untilSeedLocked(cli, 240_000)).toMatch(/does not hold the cluster seed/);
      expect(await cli(["cluster", "recover", "--secret-file", recoveryFile])).toMatch(/cluster seed accepted/);
      process.stdout.write(`cold start: down, up with the secret and cluster recover in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
      // The chain survived the cold start, still verifies and extends the head seen before it.
      expect(await cli(["cluster", "history", "--verify", "--pin", head ?? ""])).toMatch(/history verified: \d+ entries/);
      const listed = JSON.parse(await eventually(30_000, () => cli(["node", "list", "--json"]))) as { nodes: { nodeId: string; state: string }[] };
      expect(NODES.map((n) => listed.nodes.find((x) => x.nodeId === n)?.state)).toEqual(["UP", "UP", "UP"]);
      // Nothing acknowledged before the cold start is lost.
      const back = await eventually(90_000, () => connect({ servers: urls, identity: stack.admin, requestTimeoutMs: 8_000, tls }));
      clients.push(back);
      const users = await eventually(60_000, async () => new Set((await back.users.list()).users.map((u) => u.principal)));
      expect(acked.length).toBeGreaterThan(0);
      expect(acked.filter((p) => !users.has(p))).toEqual([]);
      // Back onto the join, one node at a time (each waits for a quorum of the other two).
      for (const node of NODES) {
        await stack.compose(["up", "-d", "--no-deps", "--force-recreate", "--wait", node]);
        const { stdout } = await run("docker", ["logs", container(node)]);
        expect(stdout).toMatch(/node start: joining through a peer/);
        const mounts = (await run("docker", ["inspect", "-f", "{{json .HostConfig.Mounts}} {{json .HostConfig.Binds}}", container(node)])).stdout;
        expect(mounts).not.toContain(recoveryFile);
      }
      // And the bus takes writes again.
      const late = createIdentity();
      await eventually(60_000, () => back.users.add(late.principal, `cold-${late.principal.slice(1, 7).toLowerCase()}`, "member"));
      acked.push(late.principal);
      const after = await eventually(30_000, async () => new Set((await back.users.list()).users.map((u) => u.principal)));
      expect(acked.filter((p) => !after.has(p))).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 900_000);
});
