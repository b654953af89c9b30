import { randomInt } from "node:crypto";
import { open, readdir, stat } from "node:fs/promises";
import { IdentityFileError, NkeyPrefix, SigningKey, createIdentity, curvePublicKey, encodeNkeySeed, newCurveSeed, randomBytes, writeIdentityFile } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { CliError } from "../errors.js";
import { ensurePrivateDir, serviceIdentityFile } from "../home.js";
import type { HomeLayout } from "../home.js";
import { loadIdentityForCli } from "../identity-file.js";
import type { ServiceName } from "./services.js";

const LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ALPHANUMERIC = `${LETTERS}0123456789`;
/** 1 letter + 47 alphanumerics ≈ 285 bits. */
const JETSTREAM_KEY_LENGTH = 48;
const JETSTREAM_KEY_RE = /^[A-Za-z][A-Za-z0-9]{31,}$/;

/**
 * A fresh JetStream at-rest key: alphanumeric and starting with a letter,
 * because nats-server re-parses the substituted `$UNIBUS_JS_KEY` value and
 * would read a leading digit as a number (nats-notes "At-rest encryption").
 * `randomInt` is uniform (no modulo bias).
 */
export function generateJetStreamKey(): string {
  let key = LETTERS[randomInt(LETTERS.length)] ?? "A";
  while (key.length < JETSTREAM_KEY_LENGTH) key += ALPHANUMERIC[randomInt(ALPHANUMERIC.length)] ?? "A";
  return key;
}

/** True when `key` is usable as a JetStream key via env substitution. */
export function isValidJetStreamKey(key: string): boolean {
  return JETSTREAM_KEY_RE.test(key);
}

/** What the services need from the state dir (everything but the store key). */
export interface ProvisionedServices {
  /** Admin #0. */
  readonly admin: Identity;
  /** One identity per service. */
  readonly services: ReadonlyMap<ServiceName, Identity>;
  /** System-account user (membership's kicks). */
  readonly system: Identity;
  /** The internal identity allowed only `admin.bootstrap`. */
  readonly bootstrap: Identity;
  /** `A…` key the callout signs user JWTs with. */
  readonly calloutIssuerPublic: string;
  /** `X…` curve key encrypting callout traffic. */
  readonly calloutXkeyPublic: string;
  /** Human lines about what was created on this run (empty on a reuse). */
  readonly created: readonly string[];
}

/** Everything `unibus up` needs from its state dir. */
export interface ProvisionedHome extends ProvisionedServices {
  /** JetStream at-rest key (secret: only ever passed to nats-server through its environment). */
  readonly jetstreamKey: string;
}

/** Options of {@link provisionHome}. */
export interface ProvisionOptions {
  /**
   * False for a home whose server runs elsewhere (an adopted cluster node):
   * no store key is read or made, no store or server dir is made, and every
   * key and identity must already exist, because the running cluster's
   * authorization names their public keys and a new one would be refused.
   */
  readonly storeKey?: boolean;
}

async function hasStoredData(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length > 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** True if `path` exists; false only for ENOENT (any other error is thrown, not read as absence). */
export async function fileExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/**
 * Reads the JetStream key, or creates it when the store is empty. A missing
 * key next to existing data is an error, never a regeneration: a new key would
 * leave the encrypted store unreadable and the server would skip its streams.
 */
async function loadOrCreateJetStreamKey(home: HomeLayout, created: string[]): Promise<string> {
  const path = home.jetstreamKeyFile;
  // An interrupted `unibus store rotate-key` may already have swapped in the
  // store re-encrypted under the .next key: the old key would open none of it.
  if (await fileExists(`${path}.next`)) {
    throw new CliError(`an interrupted key rotation left ${path}.next: run \`unibus store rotate-key\` to finish it, then start again`);
  }
  let fh;
  try {
    fh = await open(path, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    if (await hasStoredData(home.jetstreamDir)) {
      throw new CliError(
        `the JetStream key file ${path} is missing, but ${home.jetstreamDir} holds encrypted data.\n` +
          "Restore the key file from your backup. A new key cannot read the existing store, so none is generated.",
      );
    }
    const key = generateJetStreamKey();
    // "wx": never replace a key another process just wrote.
    const out = await open(path, "wx", 0o600);
    try {
      await out.writeFile(`${key}\n`);
      await out.sync();
    } finally {
      await out.close();
    }
    created.push(`JetStream at-rest key ${path}`);
    return key;
  }
  try {
    const st = await fh.stat();
    if ((st.mode & 0o077) !== 0) {
      throw new CliError(`the JetStream key file ${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}): run \`chmod 600 ${path}\``);
    }
    const key = (await fh.readFile("utf8")).trim();
    if (!isValidJetStreamKey(key)) {
      throw new CliError(`the JetStream key file ${path} is damaged (expected one line: a letter then 31+ letters/digits); restore it from backup`);
    }
    return key;
  } finally {
    await fh.close();
  }
}

/**
 * Reads a seed file, creating it (0600, "wx": never over one another process
 * just wrote) when missing. Only used for seeds that nothing in the store
 * depends on (the server config names their public keys afresh on each
 * start), so recreating a lost one is safe, unlike the JetStream key.
 */
async function loadOrCreateSeed(path: string, label: string, generate: () => string, created: string[], mustExist = false): Promise<string> {
  if (mustExist && !(await fileExists(path))) throw new CliError(missingForServices(path, label));
  if (!(await fileExists(path))) {
    try {
      const out = await open(path, "wx", 0o600);
      try {
        await out.writeFile(`${generate()}\n`);
        await out.sync();
      } finally {
        await out.close();
      }
      created.push(`${label} ${path}`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
  }
  const fh = await open(path, "r");
  try {
    const st = await fh.stat();
    // A readable issuer seed lets anyone mint logins for any principal.
    if ((st.mode & 0o077) !== 0) throw new CliError(`${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}): run \`chmod 600 ${path}\``);
    return (await fh.readFile("utf8")).trim();
  } finally {
    await fh.close();
  }
}

function newAccountSeed(): string {
  const seed = randomBytes(32);
  try {
    return encodeNkeySeed(NkeyPrefix.account, seed);
  } finally {
    seed.fill(0);
  }
}

/** Public keys of the callout's secrets: the server config names these, the callout reads the seed files. */
function calloutPublicKeys(issuerSeed: string, xkeySeed: string, home: HomeLayout): { issuer: string; xkey: string } {
  let issuer: string;
  let xkey: string;
  try {
    issuer = SigningKey.fromNkeySeed(issuerSeed).principal;
  } catch (err) {
    throw new CliError(`${home.calloutIssuerSeedFile} is damaged (${(err as Error).message}); delete it to have a new one created`, { cause: err });
  }
  if (!issuer.startsWith(NkeyPrefix.account)) throw new CliError(`${home.calloutIssuerSeedFile} is not an account (SA…) seed`);
  try {
    xkey = curvePublicKey(xkeySeed);
  } catch (err) {
    throw new CliError(`${home.calloutXkeySeedFile} is damaged (${(err as Error).message}); delete it to have a new one created`, { cause: err });
  }
  return { issuer, xkey };
}

/** Why a services-only start refuses a missing key or identity. */
function missingForServices(path: string, label: string): string {
  return (
    `the ${label} ${path} is missing, and this home runs only the services of a cluster node: ` +
    "the cluster's authorization names the public keys of the existing files, so a new one would be refused. Restore it from backup; nothing was created"
  );
}

async function loadOrCreateIdentity(path: string, label: string, created: string[], mustExist: boolean, servicesOnly = false): Promise<Identity> {
  if (await fileExists(path)) return loadIdentityForCli(path);
  if (servicesOnly) throw new CliError(missingForServices(path, `identity ${label}`));
  if (mustExist) {
    throw new CliError(
      `the identity file ${path} is missing, but this state dir already holds data.\n` +
        "Restore it from backup; a new admin would be a different principal.",
    );
  }
  const identity = createIdentity({ label });
  try {
    await writeIdentityFile(path, identity);
  } catch (err) {
    if (err instanceof IdentityFileError && err.code === "exists") return loadIdentityForCli(path);
    throw err;
  }
  created.push(`identity ${label} ${identity.principal}`);
  return identity;
}

/**
 * Prepares the state dir: private dirs (0700), the JetStream key and every
 * identity (0600 files). Existing state is reused as is; nothing is ever
 * regenerated over something that exists. With `storeKey: false` nothing is
 * created at all (see {@link ProvisionOptions}).
 */
export async function provisionHome(home: HomeLayout, services: readonly ServiceName[], opts?: { readonly storeKey?: true }): Promise<ProvisionedHome>;
export async function provisionHome(home: HomeLayout, services: readonly ServiceName[], opts: { readonly storeKey: false }): Promise<ProvisionedServices>;
export async function provisionHome(home: HomeLayout, services: readonly ServiceName[], opts: ProvisionOptions = {}): Promise<ProvisionedServices | ProvisionedHome> {
  const created: string[] = [];
  const servicesOnly = opts.storeKey === false;
  if (servicesOnly) {
    // The home was provisioned when it ran its own server: a missing dir means a wrong UNIBUS_HOME, not a first run.
    for (const dir of [home.root, home.secretsDir, home.identitiesDir]) {
      if (!(await fileExists(dir))) throw new CliError(missingForServices(dir, "directory"));
    }
  } else {
    for (const dir of [home.root, home.secretsDir, home.identitiesDir, home.serverDir, home.jetstreamDir]) {
      await ensurePrivateDir(dir);
    }
  }
  const hadData = servicesOnly || (await hasStoredData(home.jetstreamDir));
  const jetstreamKey = servicesOnly ? undefined : await loadOrCreateJetStreamKey(home, created);
  const issuerSeed = await loadOrCreateSeed(home.calloutIssuerSeedFile, "auth-callout issuer seed", newAccountSeed, created, servicesOnly);
  const xkeySeed = await loadOrCreateSeed(home.calloutXkeySeedFile, "auth-callout xkey seed", newCurveSeed, created, servicesOnly);
  const callout = calloutPublicKeys(issuerSeed, xkeySeed, home);
  const admin = await loadOrCreateIdentity(home.adminIdentityFile, "admin", created, hadData, servicesOnly);
  // Like service identities, these two are config-level users named afresh on each start: a lost one is only a new key.
  const system = await loadOrCreateIdentity(home.systemIdentityFile, "system", created, false, servicesOnly);
  const bootstrap = await loadOrCreateIdentity(home.bootstrapIdentityFile, "bootstrap", created, false, servicesOnly);
  const identities = new Map<ServiceName, Identity>();
  for (const name of services) {
    // A lost service identity is only a new service principal: recreate it.
    identities.set(name, await loadOrCreateIdentity(serviceIdentityFile(home, name), `service:${name}`, created, false, servicesOnly));
  }
  const provisioned: ProvisionedServices = {
    admin,
    services: identities,
    system,
    bootstrap,
    calloutIssuerPublic: callout.issuer,
    calloutXkeyPublic: callout.xkey,
    created,
  };
  return jetstreamKey === undefined ? provisioned : { ...provisioned, jetstreamKey };
}
