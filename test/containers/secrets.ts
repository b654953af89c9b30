// What `docker inspect` shows anyone with access to the engine (an operator's
// shell, a monitoring agent, a CI log): a secret there is a secret handed to
// all of them. These helpers read the real secrets a compose stack generated
// (from its state volume, and key files on the host) and look for each of
// them, in every encoding a careless change could use, in every container's
// inspect document.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import { SigningKey, fromHex } from "@unibus/crypto";

const run = promisify(execFile);
/** Shorter strings could match by chance in a large document; every secret here is far longer. */
const MIN_FORM_LENGTH = 16;

/** One secret and the strings it could appear as. */
export interface StackSecret {
  /** Where it was read from (a path, never the value). */
  readonly source: string;
  readonly forms: readonly string[];
}

function bytesForms(bytes: Uint8Array): string[] {
  const buf = Buffer.from(bytes);
  const hex = buf.toString("hex");
  return [hex, hex.toUpperCase(), buf.toString("base64"), buf.toString("base64url"), buf.toString("base64").replace(/=+$/, "")];
}

/** The text itself, its base64, and for hex text or an nkey seed the key bytes in every encoding. */
function textForms(text: string): string[] {
  const forms = [text, Buffer.from(text).toString("base64"), Buffer.from(text).toString("base64url")];
  if (/^([0-9a-fA-F]{2}){16,}$/.test(text)) forms.push(...bytesForms(fromHex(text.toLowerCase())));
  if (/^S[A-Z2-7]{40,}$/.test(text)) {
    try {
      forms.push(...bytesForms(SigningKey.fromNkeySeed(text).seedBytes()));
    } catch {
      // Not an Ed25519 seed (a curve xkey seed): its text forms are checked as they are.
    }
  }
  return forms;
}

/** An identity file's private halves: the signing seed (also as an nkey seed) and the agreement secret key. */
function identityForms(doc: Record<string, unknown>): string[] {
  const forms: string[] = [];
  for (const field of ["signingSeed", "agreementSecretKey"]) {
    const v = doc[field];
    if (typeof v !== "string") continue;
    forms.push(...textForms(v));
    if (field === "signingSeed") forms.push(SigningKey.fromSeed(fromHex(v)).nkeySeed());
  }
  return forms;
}

/** A PEM private key: every full base64 line of its body (a leak of any part of the key is a leak). */
function pemForms(text: string): string[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => !l.startsWith("-----") && l.length >= MIN_FORM_LENGTH);
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(p)));
    else if (entry.isFile()) out.push(p);
  }
  return out;
}

/** A binary secret (a node unlock key, a derived store key's bytes) in every encoding. */
export function secretOfBytes(source: string, bytes: Uint8Array): StackSecret {
  return { source, forms: [...new Set(bytesForms(bytes).filter((f) => f.length >= MIN_FORM_LENGTH))] };
}

/**
 * Runs `fn` on a private host copy of `path` in `container` (`docker cp`),
 * removed afterwards: how a test reads a node home's secrets to look for them.
 */
export async function withCopyOf<T>(container: string, path: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "unibus-ct-copy-"));
  try {
    await run("docker", ["cp", `${container}:${path}/.`, dir]);
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The secrets of one file, by what it holds. */
export function secretOfFile(source: string, content: string): StackSecret {
  const text = content.trim();
  let forms: string[];
  if (text.includes("PRIVATE KEY-----")) forms = pemForms(text);
  else if (text.startsWith("{")) forms = identityForms(JSON.parse(text) as Record<string, unknown>);
  else forms = textForms(text);
  return { source, forms: [...new Set(forms.filter((f) => f.length >= MIN_FORM_LENGTH))] };
}

/**
 * Every secret of a compose stack's state volume (`<project>-init-1:/state`:
 * the JetStream key, the callout seeds, each identity's seeds, admin #0) and
 * of the given host files (route and client-port TLS keys), read with
 * `docker cp` into a private temp dir that is removed before returning.
 */
export async function readStackSecrets(project: string, hostFiles: readonly string[] = []): Promise<StackSecret[]> {
  const dir = await mkdtemp(join(tmpdir(), "unibus-ct-secrets-"));
  try {
    await run("docker", ["cp", `${project}-init-1:/state/.`, dir]);
    const secrets: StackSecret[] = [];
    for (const path of await filesUnder(dir)) {
      const rel = relative(dir, path);
      // Secret by where it lives: keys and seeds, identities, admin #0; `env` and data files hold none.
      if (!(rel.startsWith("secrets/") || rel.startsWith("identities/") || rel === "admin.id")) continue;
      secrets.push(secretOfFile(rel, await readFile(path, "utf8")));
    }
    for (const path of hostFiles) {
      if ((await stat(path)).isFile()) secrets.push(secretOfFile(path, await readFile(path, "utf8")));
    }
    return secrets;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `docker inspect` of every container of the project, running or exited (one-shots included), by name. */
export async function inspectContainers(project: string): Promise<Map<string, string>> {
  const ids = (await run("docker", ["ps", "-aq", "--filter", `label=com.docker.compose.project=${project}`])).stdout.split("\n").filter(Boolean);
  const docs = JSON.parse((await run("docker", ["inspect", ...ids], { maxBuffer: 64 * 1024 * 1024 })).stdout) as { Name: string }[];
  return new Map(docs.map((d) => [d.Name.replace(/^\//, ""), JSON.stringify(d)]));
}

/**
 * What else a reader of the engine sees, by container: its output
 * (`docker logs`, one-shots included) and the argv of every process still
 * running in it (`docker top … -o pid,args`).
 */
export async function containerOutputs(project: string): Promise<{ logs: Map<string, string>; argv: Map<string, string> }> {
  const rows = (await run("docker", ["ps", "-a", "--format", "{{.Names}} {{.State}}", "--filter", `label=com.docker.compose.project=${project}`])).stdout.split("\n").filter(Boolean);
  const logs = new Map<string, string>();
  const argv = new Map<string, string>();
  for (const row of rows) {
    const [name, state] = row.split(" ") as [string, string];
    const out = await run("docker", ["logs", name], { maxBuffer: 64 * 1024 * 1024 });
    logs.set(name, `${out.stdout}${out.stderr}`);
    if (state === "running") argv.set(name, (await run("docker", ["top", name, "-o", "pid,args"])).stdout);
  }
  return { logs, argv };
}

/** `container: source` for every secret form found in an inspect document. */
export function secretsIn(docs: ReadonlyMap<string, string>, secrets: readonly StackSecret[]): string[] {
  const found: string[] = [];
  for (const [name, doc] of docs) {
    for (const s of secrets) if (s.forms.some((f) => doc.includes(f))) found.push(`${name}: ${s.source}`);
  }
  return found;
}

/** One process inside a container: its argv, and the SHA-256 (hex) of its `UNIBUS_JS_KEY`, or null when it has none. */
export interface ContainerProcess {
  pid: string;
  argv: string;
  keyDigest: string | null;
}

// Runs inside the container with its own node: the key is hashed there and
// never leaves it, not even into the test's output.
const PROCESS_SCAN = `
const fs = require("fs");
const out = [];
for (const pid of fs.readdirSync("/proc").filter((p) => /^\\d+$/.test(p))) {
  if (pid === String(process.pid)) continue;
  try {
    const argv = fs.readFileSync("/proc/" + pid + "/cmdline", "utf8").split("\\0").join(" ").trim();
    const v = fs.readFileSync("/proc/" + pid + "/environ", "utf8").split("\\0").find((e) => e.startsWith("UNIBUS_JS_KEY="));
    out.push({ pid, argv, keyDigest: v === undefined ? null : require("crypto").createHash("sha256").update(v.slice(14)).digest("hex") });
  } catch {}
}
console.log(JSON.stringify(out));
`;

/** Every process in a container (but the scan itself), read from its /proc. */
export async function containerProcesses(container: string): Promise<ContainerProcess[]> {
  return JSON.parse((await run("docker", ["exec", container, "/usr/local/bin/node", "-e", PROCESS_SCAN])).stdout) as ContainerProcess[];
}
