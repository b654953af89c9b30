import { chmod, mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { CliError } from "./errors.js";

/** Environment variables the CLI reads. */
export const EnvVar = {
  home: "UNIBUS_HOME",
  url: "UNIBUS_URL",
  identity: "UNIBUS_IDENTITY",
  port: "UNIBUS_PORT",
  monitorPort: "UNIBUS_MONITOR_PORT",
  /** Port of the healthz HTTP server `up` runs on loopback (default: a free one). */
  healthzPort: "UNIBUS_HEALTHZ_PORT",
  /** Base URL of that server, written to the env file (`/livez`, `/readyz`, `/healthz`, `/metrics`). */
  healthzUrl: "UNIBUS_HEALTHZ_URL",
  logLevel: "UNIBUS_LOG_LEVEL",
  tlsCa: "UNIBUS_TLS_CA",
} as const;
/** One of the {@link EnvVar} names. */
export type EnvVar = (typeof EnvVar)[keyof typeof EnvVar];

/** Where `unibus up` keeps its state, and the files inside. */
export interface HomeLayout {
  /** The state directory (`UNIBUS_HOME` or `<cwd>/.unibus`). */
  readonly root: string;
  /** KEY=VALUE file telling other commands how to reach the local bus. */
  readonly envFile: string;
  /** pid lock held by a running `unibus up`. */
  readonly lockFile: string;
  /** nats-server working dir (config, ports file, logs). */
  readonly serverDir: string;
  /** JetStream `store_dir` (the server keeps its files in `jetstream/` inside). */
  readonly jetstreamDir: string;
  /** Directory of secret files. */
  readonly secretsDir: string;
  /** JetStream at-rest encryption key. */
  readonly jetstreamKeyFile: string;
  /** Account seed (`SA…`) the auth-callout signs its responses with. */
  readonly calloutIssuerSeedFile: string;
  /** Curve seed (`SX…`) that encrypts callout requests and responses (`auth_callout.xkey`). */
  readonly calloutXkeySeedFile: string;
  /** Directory of per-service identity files. */
  readonly identitiesDir: string;
  /** System-account user: membership kicks live connections with it. */
  readonly systemIdentityFile: string;
  /** The privileged internal identity that may only call `admin.bootstrap`. */
  readonly bootstrapIdentityFile: string;
  /** Admin #0 identity. */
  readonly adminIdentityFile: string;
}

/** Resolves the state directory from `UNIBUS_HOME`, else `<cwd>/.unibus`. */
export function resolveHome(env: Readonly<Record<string, string | undefined>>, cwd: string): HomeLayout {
  const fromEnv = env[EnvVar.home];
  const root = resolve(cwd, fromEnv && fromEnv.length > 0 ? fromEnv : ".unibus");
  return {
    root,
    envFile: join(root, "env"),
    lockFile: join(root, "up.lock"),
    serverDir: join(root, "server"),
    jetstreamDir: join(root, "data"),
    secretsDir: join(root, "secrets"),
    jetstreamKeyFile: join(root, "secrets", "jetstream.key"),
    calloutIssuerSeedFile: join(root, "secrets", "callout-issuer.seed"),
    calloutXkeySeedFile: join(root, "secrets", "callout-xkey.seed"),
    identitiesDir: join(root, "identities"),
    systemIdentityFile: join(root, "identities", "system.id"),
    bootstrapIdentityFile: join(root, "identities", "bootstrap.id"),
    adminIdentityFile: join(root, "admin.id"),
  };
}

/** Path of a service's identity file. */
export function serviceIdentityFile(home: HomeLayout, service: string): string {
  return join(home.identitiesDir, `${service}.id`);
}

/**
 * Creates `dir` (and parents) and forces mode 0700: the state dir holds keys,
 * and a pre-existing dir with a looser mode would expose them.
 */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

/**
 * Writes `content` to `path` with mode 0600 via a temp file and rename, so a
 * reader never sees a half-written file and the content is never world-readable.
 */
export async function writePrivateFile(path: string, content: string): Promise<void> {
  const tmp = join(dirname(path), `.${Date.now()}-${process.pid}.tmp`);
  const fh = await open(tmp, "wx", 0o600);
  try {
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Parses KEY=VALUE lines; blank lines and `#` comments are skipped. */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}

/** Renders KEY=VALUE lines; values must be single-line. */
export function renderEnvFile(values: Readonly<Record<string, string>>): string {
  const lines = ["# Written by `unibus up`: how to reach the local bus."];
  for (const [key, value] of Object.entries(values)) {
    if (/[\r\n]/.test(value)) throw new CliError(`env value for ${key} spans lines`);
    lines.push(`${key}=${value}`);
  }
  return `${lines.join("\n")}\n`;
}

/** Reads the home env file; undefined when it does not exist. */
export async function readHomeEnvFile(home: HomeLayout): Promise<Record<string, string> | undefined> {
  try {
    return parseEnvFile(await readFile(home.envFile, "utf8"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CliError(`cannot read ${home.envFile}: ${(err as Error).message}`, { cause: err });
  }
}
