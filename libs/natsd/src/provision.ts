import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { constants, existsSync, readFileSync } from "node:fs";
import { access, chmod, mkdir, mkdtemp, readFile, readdir, rename, rm, rmdir, stat, writeFile } from "node:fs/promises";
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
  /** Downloaded from Debian forky by this call. */
  Download: "download",
} as const;
/** Where a nats-server binary came from. */
export type NatsServerSource = (typeof NatsServerSource)[keyof typeof NatsServerSource];

/** A usable nats-server binary. */
export interface NatsServerBinary {
  /** Absolute path of the executable. */
  bin: string;
  /** `major.minor.patch`, e.g. `2.15.1`. */
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

/** The Debian suite that ships nats-server 2.15 (trixie has 2.10.27, bookworm 2.9.10). */
export const DEBIAN_SUITE = "forky";

/**
 * The nats-server package the download installs. The checksums pin the exact
 * bytes: a mirror (or anyone between us and it) serving a different build of
 * the same version is refused. apt itself already checks every download
 * against the suite's GPG-signed Release file, so a version other than the
 * pinned one (the archive drops superseded versions) is still authenticated,
 * only not pinned, and the download says so loudly.
 */
export const PINNED_NATS_SERVER = {
  /** Debian package version. */
  debVersion: "2.15.1-1",
  /** sha256 of `nats-server_<debVersion>_<arch>.deb`, per Debian architecture. */
  debSha256: { amd64: "31ef4ceaa84e8248d449e508472e3770c17c3695cb5cb0ee96e03912724ea884" },
  /** sha256 of `usr/sbin/nats-server` inside that .deb, per Debian architecture. */
  binSha256: { amd64: "25379e8f6ff59d0f9b96f06b3572da8c513dfe97fe54f693bb03aa802b87480c" },
} as const;

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
  const aptCache = (await whichAll("apt-cache", pathVar))[0];
  const dpkgDeb = (await whichAll("dpkg-deb", pathVar))[0];
  if (!aptGet || !aptCache || !dpkgDeb) return { problem: "apt-get/apt-cache/dpkg-deb not found (not a Debian-like system)" };

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
    const madison = await run(aptCache, [...aptOpts, "madison", "nats-server"], { cwd: tmp, timeoutMs: 60_000 });
    const choice = chooseDebianVersion(parseMadison(madison.stdout));
    if ("problem" in choice) return choice;
    if (!choice.pinned) {
      log(
        `WARNING: the pinned nats-server ${PINNED_NATS_SERVER.debVersion} is gone from Debian ${DEBIAN_SUITE}; ` +
          `installing its newest, ${choice.debVersion}, checked only by apt's signed Release file, not by a pinned checksum. ` +
          "Update PINNED_NATS_SERVER in libs/natsd/src/provision.ts, or set NATS_SERVER_BIN to a nats-server you chose.",
      );
    }
    const dl = await run(aptGet, [...aptOpts, "download", `nats-server=${choice.debVersion}`], { cwd: tmp, timeoutMs: APT_TIMEOUT_MS });
    if (!dl.ok) return { problem: `apt-get download nats-server=${choice.debVersion} failed: ${lastLine(dl)}` };
    const deb = (await readdir(tmp)).find((f) => f.startsWith("nats-server_") && f.endsWith(".deb"));
    if (!deb) return { problem: "apt-get download produced no nats-server .deb" };
    const pinnedDeb = choice.pinned ? pinnedSha256(PINNED_NATS_SERVER.debSha256, deb) : undefined;
    if (pinnedDeb !== undefined) {
      const actual = await sha256File(join(tmp, deb));
      if (actual !== pinnedDeb) return { problem: `${deb} has sha256 ${actual}, not the pinned ${pinnedDeb}: refusing it` };
    } else if (choice.pinned) {
      log(`no pinned checksum for ${deb} on this architecture: relying on apt's signed Release file`);
    }
    const root = join(tmp, "root");
    const x = await run(dpkgDeb, ["-x", join(tmp, deb), root], { timeoutMs: 60_000 });
    if (!x.ok) return { problem: `dpkg-deb -x ${deb} failed: ${lastLine(x)}` };
    const extracted = join(root, "usr", "sbin", "nats-server");
    const pinnedBin = choice.pinned ? pinnedSha256(PINNED_NATS_SERVER.binSha256, deb) : undefined;
    if (pinnedBin !== undefined) {
      const actual = await sha256File(extracted).catch(() => "missing");
      if (actual !== pinnedBin) return { problem: `usr/sbin/nats-server in ${deb} has sha256 ${actual}, not the pinned ${pinnedBin}: refusing it` };
    }
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

/** Debian versions of nats-server in `apt-cache madison nats-server` output (`nats-server | 2.15.1-1 | <uri> Packages`). */
export function parseMadison(text: string): string[] {
  const versions: string[] = [];
  for (const line of text.split("\n")) {
    const cols = line.split("|").map((c) => c.trim());
    if (cols[0] === "nats-server" && cols[1] && /Packages$/.test(cols[2] ?? "") && !versions.includes(cols[1])) versions.push(cols[1]);
  }
  return versions;
}

/**
 * Which Debian version to download: the pinned one when the suite still has
 * it, else the newest one that is >= {@link MIN_NATS_SERVER_VERSION} (the
 * caller warns that it is not pinned), else a problem saying what to do.
 */
export function chooseDebianVersion(
  available: readonly string[],
  pinned: string = PINNED_NATS_SERVER.debVersion,
): { debVersion: string; pinned: boolean } | { problem: string } {
  if (available.includes(pinned)) return { debVersion: pinned, pinned: true };
  const usable = available
    .map((debVersion) => ({ debVersion, upstream: parseNatsServerVersion(debVersion) }))
    .filter((v): v is { debVersion: string; upstream: string } => v.upstream !== undefined && isAtLeast(v.upstream, MIN_NATS_SERVER_VERSION))
    .sort((a, b) => (isAtLeast(a.upstream, b.upstream) ? -1 : 1));
  const newest = usable[0];
  if (newest) return { debVersion: newest.debVersion, pinned: false };
  const seen = available.length > 0 ? `only ${available.join(", ")}` : "no nats-server package";
  return {
    problem:
      `Debian ${DEBIAN_SUITE} has ${seen}, not the pinned ${pinned} nor any >= ${MIN_NATS_SERVER_VERSION}: ` +
      `set NATS_SERVER_BIN to a nats-server >= ${MIN_NATS_SERVER_VERSION}, or put one on PATH`,
  };
}

/** The pinned checksum for a `nats-server_<version>_<arch>.deb` file name, if its architecture has one. */
function pinnedSha256(table: Readonly<Record<string, string>>, deb: string): string | undefined {
  const arch = /_([a-z0-9]+)\.deb$/.exec(deb)?.[1];
  return arch === undefined ? undefined : table[arch];
}

async function sha256File(path: string): Promise<string> {
  return createHash("sha256").update(await readFile(path)).digest("hex");
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
 * Finds a nats-server >= {@link MIN_NATS_SERVER_VERSION}, trying in order:
 * `$NATS_SERVER_BIN`, a `nats-server` on PATH, the binary cached in the tools
 * dir, and finally a download of Debian forky's package (apt-get with private
 * state, the pinned version checked against its pinned sha256, then
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
