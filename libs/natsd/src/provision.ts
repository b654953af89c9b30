import { execFile } from "node:child_process";
import { constants, existsSync, readFileSync } from "node:fs";
import { access, chmod, mkdir, mkdtemp, readFile, rename, rm, rmdir, stat, writeFile } from "node:fs/promises";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { NatsServerNotFoundError } from "./errors.js";
import { MIN_NATS_SERVER_VERSION, isAtLeast, parseNatsServerVersion } from "./version.js";

/** Where a nats-server binary came from. */
export const NatsServerSource = {
  /** `$NATS_SERVER_BIN`. */
  Env: "env",
  /** A `nats-server` on `PATH`. */
  Path: "path",
  /** A binary cached earlier in the project tools dir. */
  Tools: "tools",
  /** Downloaded from Debian trixie by this call. */
  Download: "download",
} as const;
/** Where a nats-server binary came from. */
export type NatsServerSource = (typeof NatsServerSource)[keyof typeof NatsServerSource];

/** A usable nats-server binary. */
export interface NatsServerBinary {
  /** Absolute path of the executable. */
  bin: string;
  /** `major.minor.patch`, e.g. `2.10.27`. */
  version: string;
  /** Which provisioning step found it. */
  source: NatsServerSource;
}

/** Options of {@link findNatsServer}. */
export interface FindNatsServerOptions {
  /**
   * Directory holding the cached binary (`<dir>/bin/nats-server`). Default:
   * `$UNIBUS_TOOLS_DIR/nats-server` if set, else `<repo root>/.tools/nats-server`.
   */
  toolsDir?: string;
  /** Progress messages (only the slow download step logs). Default: silent. */
  log?: (msg: string) => void;
  /** Environment to read `NATS_SERVER_BIN`, `PATH`, `UNIBUS_TOOLS_DIR` from. Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
}

/** The Debian suite that ships nats-server >= 2.10 (bookworm has 2.9.10). */
const DEBIAN_SUITE = "trixie";
const DEFAULT_MIRROR = "http://deb.debian.org/debian";
const DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg";
/** A lock older than this was left by a crashed process (a download takes well under it). */
const STALE_LOCK_MS = 10 * 60_000;
const APT_TIMEOUT_MS = 5 * 60_000;

interface RunResult {
  ok: boolean;
  stdout: string;
  stderr: string;
  error?: string;
}

function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((done) => {
    execFile(
      cmd,
      args,
      { cwd: opts.cwd, timeout: opts.timeoutMs ?? 10_000, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, LC_ALL: "C" } },
      (err, stdout, stderr) => {
        done({ ok: !err, stdout: String(stdout), stderr: String(stderr), error: err?.message });
      },
    );
  });
}

/** Runs `bin --version`; returns the version or a sentence saying why not. */
async function probe(bin: string): Promise<{ version: string } | { problem: string }> {
  const r = await run(bin, ["--version"]);
  if (!r.ok) return { problem: `${bin} does not run (${(r.error ?? "").split("\n")[0]})` };
  const version = parseNatsServerVersion(r.stdout + r.stderr);
  if (!version) return { problem: `${bin} --version printed no version` };
  if (!isAtLeast(version, MIN_NATS_SERVER_VERSION)) {
    return { problem: `nats-server ${version} at ${bin} is too old (need >= ${MIN_NATS_SERVER_VERSION})` };
  }
  return { version };
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

async function whichAll(name: string, pathVar: string | undefined): Promise<string[]> {
  const found: string[] = [];
  for (const dir of (pathVar ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    if (!found.includes(candidate) && (await isExecutable(candidate))) found.push(candidate);
  }
  return found;
}

/** Nearest ancestor of `start` whose package.json declares npm workspaces. */
export function findRepoRoot(start: string = dirname(fileURLToPath(import.meta.url))): string | undefined {
  let dir = resolve(start);
  for (;;) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, "utf8")) as { workspaces?: unknown }).workspaces) return dir;
      } catch {
        // An unreadable package.json is not the root; keep climbing.
      }
    }
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/**
 * The directory where the provisioned nats-server is cached:
 * `$UNIBUS_TOOLS_DIR/nats-server`, else `<repo root>/.tools/nats-server`.
 */
export function defaultNatsToolsDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.UNIBUS_TOOLS_DIR) return join(resolve(env.UNIBUS_TOOLS_DIR), "nats-server");
  const root = findRepoRoot() ?? findRepoRoot(process.cwd()) ?? process.cwd();
  return join(root, ".tools", "nats-server");
}

/** Mirror and keyring of the system's Debian sources, so the download uses the same trust root. */
export function debianMirrorFromSources(text: string): { mirror: string; keyring: string } | undefined {
  for (const stanza of text.split(/\n\s*\n/)) {
    const field = (name: string): string | undefined =>
      new RegExp(`^${name}:\\s*(.+)$`, "mi").exec(stanza)?.[1]?.trim();
    const uris = field("URIs");
    const types = field("Types") ?? "";
    if (!uris || !/\bdeb\b/.test(types)) continue;
    const mirror = uris.split(/\s+/).find((u) => !/security/.test(u));
    if (!mirror) continue;
    return { mirror, keyring: field("Signed-By") ?? DEFAULT_KEYRING };
  }
  return undefined;
}

async function readDebianSource(): Promise<{ mirror: string; keyring: string }> {
  try {
    const found = debianMirrorFromSources(await readFile("/etc/apt/sources.list.d/debian.sources", "utf8"));
    if (found) return found;
  } catch {
    // Older images use sources.list; the defaults below match Debian's own.
  }
  try {
    const line = /^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+\S+/m.exec(await readFile("/etc/apt/sources.list", "utf8"));
    if (line?.[2]) {
      const keyring = /signed-by=(\S+)/.exec(line[1] ?? "")?.[1] ?? DEFAULT_KEYRING;
      return { mirror: line[2], keyring };
    }
  } catch {
    // Fall through to defaults.
  }
  return { mirror: DEFAULT_MIRROR, keyring: DEFAULT_KEYRING };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * mkdir is atomic, so the first process to create the lock dir downloads
 * while parallel test workers wait; a crashed holder's lock goes stale.
 */
async function withLock<T>(lockDir: string, log: (m: string) => void, fn: () => Promise<T>): Promise<T> {
  let announced = false;
  for (;;) {
    try {
      await mkdir(lockDir);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      try {
        if (Date.now() - (await stat(lockDir)).mtimeMs > STALE_LOCK_MS) {
          log(`removing stale lock ${lockDir}`);
          await rm(lockDir, { recursive: true, force: true });
          continue;
        }
      } catch {
        continue;
      }
      if (!announced) log(`waiting for another process to finish provisioning (${lockDir})`);
      announced = true;
      await sleep(250);
    }
  }
  try {
    return await fn();
  } finally {
    await rmdir(lockDir).catch(() => undefined);
  }
}

async function downloadFromDebian(
  toolsDir: string,
  pathVar: string | undefined,
  log: (m: string) => void,
): Promise<{ version: string } | { problem: string }> {
  const aptGet = (await whichAll("apt-get", pathVar))[0];
  const dpkgDeb = (await whichAll("dpkg-deb", pathVar))[0];
  if (!aptGet || !dpkgDeb) return { problem: "apt-get/dpkg-deb not found (not a Debian-like system)" };

  const { mirror, keyring } = await readDebianSource();
  await mkdir(toolsDir, { recursive: true });
  // The temp dir sits inside toolsDir so the final rename stays on one filesystem (atomic).
  const tmp = await mkdtemp(join(toolsDir, ".download-"));
  try {
    const sourceList = join(tmp, `${DEBIAN_SUITE}.list`);
    await writeFile(sourceList, `deb [signed-by=${keyring}] ${mirror} ${DEBIAN_SUITE} main\n`);
    await mkdir(join(tmp, "lists", "partial"), { recursive: true });
    await mkdir(join(tmp, "cache", "archives", "partial"), { recursive: true });
    // Our own source list, lists and cache: the system's apt state is never touched.
    const aptOpts = [
      "-o", `Dir::Etc::SourceList=${sourceList}`,
      "-o", "Dir::Etc::SourceParts=/dev/null",
      "-o", `Dir::State::Lists=${join(tmp, "lists")}`,
      "-o", `Dir::Cache=${join(tmp, "cache")}`,
      "-o", "Debug::NoLocking=1",
      "-q",
    ];
    log(`downloading nats-server from Debian ${DEBIAN_SUITE} (${mirror})`);
    const update = await run(aptGet, [...aptOpts, "update"], { cwd: tmp, timeoutMs: APT_TIMEOUT_MS });
    if (!update.ok) return { problem: `apt-get update for ${DEBIAN_SUITE} failed: ${lastLine(update)}` };
    const dl = await run(aptGet, [...aptOpts, "download", "nats-server"], { cwd: tmp, timeoutMs: APT_TIMEOUT_MS });
    if (!dl.ok) return { problem: `apt-get download nats-server failed: ${lastLine(dl)}` };
    const deb = (await run("sh", ["-c", "ls nats-server_*.deb"], { cwd: tmp })).stdout.trim().split("\n")[0];
    if (!deb) return { problem: "apt-get download produced no nats-server .deb" };
    const root = join(tmp, "root");
    const x = await run(dpkgDeb, ["-x", join(tmp, deb), root], { timeoutMs: 60_000 });
    if (!x.ok) return { problem: `dpkg-deb -x ${deb} failed: ${lastLine(x)}` };
    const extracted = join(root, "usr", "sbin", "nats-server");
    const checked = await probe(extracted);
    if ("problem" in checked) return { problem: `downloaded ${deb}: ${checked.problem}` };
    await chmod(extracted, 0o755);
    await mkdir(join(toolsDir, "bin"), { recursive: true });
    await rename(extracted, join(toolsDir, "bin", "nats-server"));
    log(`installed nats-server ${checked.version} into ${toolsDir}`);
    return checked;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

function lastLine(r: RunResult): string {
  const text = (r.stderr.trim() || r.error || r.stdout.trim() || "no output").split("\n");
  return text.slice(-2).join(" / ");
}

async function locate(opts: FindNatsServerOptions): Promise<NatsServerBinary> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (() => undefined);
  const toolsDir = resolve(opts.toolsDir ?? defaultNatsToolsDir(env));
  const findings: string[] = [];

  const fromEnv = env.NATS_SERVER_BIN;
  if (fromEnv) {
    const bin = resolve(fromEnv);
    const r = await probe(bin);
    if ("version" in r) return { bin, version: r.version, source: NatsServerSource.Env };
    // An explicit choice that does not work is an error, not a reason to run something else.
    throw new NatsServerNotFoundError([`NATS_SERVER_BIN: ${r.problem}`]);
  }
  findings.push("NATS_SERVER_BIN: not set");

  const onPath = await whichAll("nats-server", env.PATH);
  if (onPath.length === 0) findings.push("PATH: no nats-server found");
  for (const bin of onPath) {
    const r = await probe(bin);
    if ("version" in r) return { bin, version: r.version, source: NatsServerSource.Path };
    findings.push(`PATH: ${r.problem}`);
  }

  const cached = join(toolsDir, "bin", "nats-server");
  const checkCache = async (): Promise<NatsServerBinary | undefined> => {
    if (!(await isExecutable(cached))) return undefined;
    const r = await probe(cached);
    if ("version" in r) return { bin: cached, version: r.version, source: NatsServerSource.Tools };
    findings.push(`tools dir: ${r.problem}`);
    return undefined;
  };
  const hit = await checkCache();
  if (hit) return hit;
  findings.push(`tools dir: no cached binary at ${cached}`);

  try {
    await mkdir(toolsDir, { recursive: true });
    const result = await withLock(join(toolsDir, ".lock"), log, async () => {
      // Another process may have installed it while we waited for the lock.
      const late = await checkCache();
      if (late) return late;
      const r = await downloadFromDebian(toolsDir, env.PATH, log);
      if ("version" in r) return { bin: cached, version: r.version, source: NatsServerSource.Download } as const;
      findings.push(`Debian ${DEBIAN_SUITE} download: ${r.problem}`);
      return undefined;
    });
    if (result) return result;
  } catch (err) {
    findings.push(`Debian ${DEBIAN_SUITE} download: ${(err as Error).message}`);
    throw new NatsServerNotFoundError(findings, { cause: err });
  }
  throw new NatsServerNotFoundError(findings);
}

const memo = new Map<string, Promise<NatsServerBinary>>();

/**
 * Finds a nats-server >= 2.10, trying in order: `$NATS_SERVER_BIN`, a
 * `nats-server` on PATH, the binary cached in the tools dir, and finally a
 * download of Debian trixie's package (apt-get with private state, then
 * `dpkg-deb -x`) installed atomically into the tools dir. Safe to call from
 * parallel processes (a lock dir serializes the download); memoized per
 * process, except after a failure.
 *
 * @throws NatsServerNotFoundError saying what to do and what each step found.
 */
export function findNatsServer(opts: FindNatsServerOptions = {}): Promise<NatsServerBinary> {
  const env = opts.env ?? process.env;
  const key = JSON.stringify([opts.toolsDir, env.NATS_SERVER_BIN, env.PATH, env.UNIBUS_TOOLS_DIR]);
  let found = memo.get(key);
  if (!found) {
    found = locate(opts);
    memo.set(key, found);
    found.catch(() => memo.delete(key));
  }
  return found;
}
