import { execFile } from "node:child_process";
import { chmod, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { CliError } from "../errors.js";
import { ensurePrivateDir } from "../home.js";
import type { HomeLayout } from "../home.js";

const run = promisify(execFile);

/** The loopback TLS material `unibus up --tls` keeps in the state dir. */
export interface LoopbackTls {
  readonly dir: string;
  /** CA clients trust (public). */
  readonly caFile: string;
  /** Server certificate (SAN IP:127.0.0.1, DNS:localhost) and its key (0600). */
  readonly certFile: string;
  readonly keyFile: string;
}

/** Where {@link ensureLoopbackTls} keeps its files. */
export function loopbackTlsPaths(home: HomeLayout): LoopbackTls {
  const dir = join(home.root, "tls");
  return { dir, caFile: join(dir, "ca.pem"), certFile: join(dir, "server.pem"), keyFile: join(dir, "server.key") };
}

const DAYS = "825";
/** Renew a server certificate that expires within this many seconds. */
const RENEW_BEFORE_S = "2592000";

async function openssl(args: string[]): Promise<void> {
  try {
    // Only file paths and public names go on argv; keys are written by openssl to 0600 files (umask below).
    await run("openssl", args, { env: { ...process.env, OPENSSL_CONF: "/dev/null" } });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === "ENOENT") throw new CliError("`unibus up --tls` needs the openssl command (apt-get install openssl)", { cause: err });
    throw new CliError(`openssl ${args[0]} failed: ${(e.stderr ?? e.message).trim().split("\n")[0]}`, { cause: err });
  }
}

async function usable(t: LoopbackTls): Promise<boolean> {
  for (const f of [t.caFile, t.certFile, t.keyFile]) {
    try {
      await stat(f);
    } catch {
      return false;
    }
  }
  try {
    await openssl(["verify", "-CAfile", t.caFile, t.certFile]);
    await openssl(["x509", "-checkend", RENEW_BEFORE_S, "-noout", "-in", t.certFile]);
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes (or reuses) a CA and a server certificate for the loopback bus with
 * the openssl command: node:crypto cannot issue X.509 certificates, and the
 * deploy scripts already rely on openssl, so no X.509 library is added. The
 * CA's key is deleted once the server certificate is signed: nothing can
 * issue another certificate this CA vouches for, and a renewal makes a new CA.
 */
export async function ensureLoopbackTls(home: HomeLayout): Promise<{ tls: LoopbackTls; created: boolean }> {
  const t = loopbackTlsPaths(home);
  await ensurePrivateDir(t.dir);
  if (await usable(t)) return { tls: t, created: false };
  const caKey = join(t.dir, "ca.key");
  const ext = join(t.dir, "server.ext");
  const csr = join(t.dir, "server.csr");
  const oldUmask = process.umask(0o077);
  try {
    await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", caKey]);
    await openssl([
      "req", "-x509", "-new", "-key", caKey, "-sha256", "-days", DAYS, "-subj", "/O=unibus/CN=unibus loopback CA",
      "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", t.caFile,
    ]);
    await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", t.keyFile]);
    await openssl(["req", "-new", "-key", t.keyFile, "-subj", "/O=unibus/CN=127.0.0.1", "-out", csr]);
    await writeFile(
      ext,
      "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    );
    await openssl(["x509", "-req", "-in", csr, "-CA", t.caFile, "-CAkey", caKey, "-CAcreateserial", "-sha256", "-days", DAYS, "-extfile", ext, "-out", t.certFile]);
  } finally {
    process.umask(oldUmask);
    for (const f of [caKey, ext, csr, join(t.dir, "ca.srl")]) await rm(f, { force: true });
  }
  await chmod(t.keyFile, 0o600);
  await chmod(t.caFile, 0o644);
  await chmod(t.certFile, 0o644);
  return { tls: t, created: true };
}
