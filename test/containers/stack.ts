import { execFile } from "node:child_process";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { freeLoopbackPort } from "@unibus/testing";
import { DockerComposeEnvironment, Wait } from "testcontainers";
import type { StartedDockerComposeEnvironment } from "testcontainers";
import { loadIdentityFile } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";

const run = promisify(execFile);
const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** The compose stack (docker-compose.yml or another compose file) started for a suite, with admin #0 copied to the host. */
export interface ComposeStack {
  readonly env: StartedDockerComposeEnvironment;
  /** `nats://127.0.0.1:<published port>` (the first of `urls`). */
  readonly url: string;
  /** The healthz HTTP base URL published on the host's loopback. */
  readonly healthzUrl: string;
  /** One per published client port, in the order of `ports` (a cluster: one per node). */
  readonly urls: string[];
  /** Compose project name (container names are `<project>-<service>-<n>`). */
  readonly project: string;
  readonly admin: Identity;
  /** Seconds from `compose up` to every container healthy. */
  readonly secondsToHealthy: number;
  /** Runs `docker compose <args>` on this stack (its project, file and variables), plus `environment`. */
  compose(args: readonly string[], environment?: Record<string, string>): Promise<{ stdout: string; stderr: string }>;
  /** Container ids of a service's replicas. */
  replicas(service: string): Promise<string[]>;
  stop(): Promise<void>;
}

/** Options of {@link startComposeStack}. */
export interface ComposeStackOptions {
  project: string;
  /** Compose file in the repo root. Default docker-compose.yml. */
  file?: string;
  /** Env variables naming the published client ports; each gets a free loopback port. Default [UNIBUS_DOCKER_PORT]. */
  ports?: string[];
  /** More compose variables (never secrets: they reach the compose model). */
  environment?: Record<string, string>;
  replicas?: { membership?: number; keys?: number };
  /** One-shot services waited on to exit 0, besides init and bootstrap. */
  oneShots?: readonly string[];
  /** Budget for every container healthy and every one-shot done. Default 180 s. */
  startupTimeoutMs?: number;
}

/** Starts the stack under its own project name (volumes included, removed by stop()). */
export async function startComposeStack(opts: ComposeStackOptions): Promise<ComposeStack> {
  const file = opts.file ?? "docker-compose.yml";
  // The healthz HTTP port is published too: a free one per stack, so two stacks
  // (or anything on the host's 8080) never collide. Appended, so client port
  // indexes stay as the caller named them.
  const portVars = [...(opts.ports ?? ["UNIBUS_DOCKER_PORT"]), "UNIBUS_HEALTHZ_DOCKER_PORT"];
  const ports: number[] = [];
  for (const _ of portVars) {
    let p = await freeLoopbackPort();
    while (ports.includes(p)) p = await freeLoopbackPort();
    ports.push(p);
  }
  const compose = (...args: string[]) =>
    run("docker", ["compose", "-p", opts.project, "-f", join(REPO_ROOT, file), ...args], { cwd: REPO_ROOT, env: { ...process.env, ...opts.environment } });
  // A clean slate: volumes left by an interrupted run would hold another run's state.
  await compose("down", "-v", "--remove-orphans").catch(() => undefined);
  const t0 = Date.now();
  const variables = {
    ...opts.environment,
    ...Object.fromEntries(portVars.map((v, i) => [v, String(ports[i])])),
    UNIBUS_MEMBERSHIP_REPLICAS: String(opts.replicas?.membership ?? 1),
    UNIBUS_KEYS_REPLICAS: String(opts.replicas?.keys ?? 1),
  };
  let composeEnv = new DockerComposeEnvironment(REPO_ROOT, file)
    .withProjectName(opts.project)
    .withEnvironment(variables)
    .withDefaultWaitStrategy(Wait.forHealthCheck())
    .withWaitStrategy("init-1", Wait.forOneShotStartup())
    .withWaitStrategy("bootstrap-1", Wait.forOneShotStartup());
  for (const name of opts.oneShots ?? []) composeEnv = composeEnv.withWaitStrategy(`${name}-1`, Wait.forOneShotStartup());
  const env = await composeEnv
    .withStartupTimeout(opts.startupTimeoutMs ?? 180_000)
    .up()
    .catch(async (err: unknown) => {
      // Say which container failed and why before the stack goes away.
      const ps = await compose("ps", "-a", "--format", "{{.Name}} {{.Status}}").catch(() => ({ stdout: "" }));
      const logs = await compose("logs", "--no-color", "--tail", "15").catch(() => ({ stdout: "" }));
      process.stderr.write(`compose stack failed to start:\n${ps.stdout}\n${logs.stdout}\n`);
      await compose("down", "-v", "--remove-orphans").catch(() => undefined);
      throw err;
    });
  const secondsToHealthy = (Date.now() - t0) / 1000;
  const dir = await mkdtemp(join(tmpdir(), "unibus-ct-"));
  try {
    // Admin #0 from the state volume (the init container has it), as deploy/scripts/compose-admin.sh does.
    const adminFile = join(dir, "admin.id");
    await run("docker", ["cp", `${opts.project}-init-1:/state/admin.id`, adminFile]);
    await chmod(adminFile, 0o600);
    const admin = await loadIdentityFile(adminFile).catch(async (err: unknown) => {
      await env.down({ removeVolumes: true });
      throw err;
    });
    return {
      env,
      url: `nats://127.0.0.1:${ports[0]}`,
      urls: ports.slice(0, -1).map((p) => `nats://127.0.0.1:${p}`),
      healthzUrl: `http://127.0.0.1:${ports[ports.length - 1]}`,
      project: opts.project,
      admin,
      secondsToHealthy,
      compose(args, environment = {}) {
        return run("docker", ["compose", "-p", opts.project, "-f", join(REPO_ROOT, file), ...args], { cwd: REPO_ROOT, env: { ...process.env, ...variables, ...environment }, timeout: 300_000 });
      },
      async replicas(service) {
        const { stdout } = await run("docker", ["ps", "-q", "--filter", `label=com.docker.compose.project=${opts.project}`, "--filter", `label=com.docker.compose.service=${service}`]);
        return stdout.split("\n").filter((l) => l !== "");
      },
      async stop() {
        await env.down({ removeVolumes: true, timeout: 10_000 });
      },
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
