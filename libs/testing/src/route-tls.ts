import { execFile } from "node:child_process";
import { chmod, mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** One node's route TLS files. */
export interface RouteTlsFiles {
  /** The node's certificate (serverAuth + clientAuth: each route end is both). */
  readonly cert: string;
  /** Its private key, mode 0600. */
  readonly key: string;
  /** The throwaway route CA every node trusts on its route port. */
  readonly ca: string;
}

async function openssl(args: readonly string[]): Promise<void> {
  try {
    await run("openssl", args, { timeout: 30_000 });
  } catch (err) {
    const e = err as { code?: string; stderr?: string };
    if (e.code === "ENOENT") throw new Error("TLS routes need the openssl CLI on PATH", { cause: err });
    throw new Error(`openssl ${args[0]} failed: ${e.stderr ?? String(err)}`, { cause: err });
  }
}

/**
 * Makes a throwaway route CA and one certificate per node under `dir`, with
 * the profile of the production route certificates (ECDSA P-256, CA with
 * pathlen 0, node certs serverAuth+clientAuth): routes are mutual TLS, so a
 * process that is not a node cannot join the cluster. The SAN also names
 * 127.0.0.1, where test nodes (and the link proxies) listen. The CA key is
 * deleted once the certs are signed: nothing can issue another node cert.
 */
export async function makeRouteTls(dir: string, nodeNames: readonly string[]): Promise<RouteTlsFiles[]> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caKey = join(dir, "route-ca.key");
  const ca = join(dir, "route-ca.pem");
  await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", caKey]);
  await chmod(caKey, 0o600);
  await openssl([
    "req", "-x509", "-new", "-key", caKey, "-sha256", "-days", "2", "-subj", "/O=unibus/CN=unibus test route CA",
    "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", ca,
  ]);
  const files: RouteTlsFiles[] = [];
  for (const name of nodeNames) {
    const key = join(dir, `${name}.key`);
    const csr = join(dir, `${name}.csr`);
    const ext = join(dir, `${name}.ext`);
    const cert = join(dir, `${name}.pem`);
    await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key]);
    await chmod(key, 0o600);
    await writeFile(ext, `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:${name},IP:127.0.0.1\n`, { mode: 0o600 });
    await openssl(["req", "-new", "-key", key, "-subj", `/O=unibus/CN=${name}`, "-out", csr]);
    await openssl(["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", caKey, "-CAcreateserial", "-sha256", "-days", "2", "-extfile", ext, "-out", cert]);
    await rm(csr, { force: true });
    await rm(ext, { force: true });
    files.push({ cert, key, ca });
  }
  await rm(caKey, { force: true });
  await rm(join(dir, "route-ca.srl"), { force: true });
  return files;
}
