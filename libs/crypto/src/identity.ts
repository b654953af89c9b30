import { constants as fsConstants } from "node:fs";
import { link, mkdir, open, rename, unlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { SigningKey } from "./ed25519.js";
import { constantTimeEqual, fromHex, randomBytes, toHex } from "./encoding.js";
import { agreementPublicKey, generateAgreementKeyPair } from "./x25519.js";

/** The identity file format version this module reads and writes. */
export const IDENTITY_FILE_VERSION = 1;
const IDENTITY_FILE_KIND = "unibus-identity";

/**
 * A principal's key material (architecture §3): an Ed25519 signing key (its nkey is
 * the principal id) and an independent X25519 key-agreement key (sealed boxes).
 *
 * Objects from this module carry the X25519 secret as a non-enumerable
 * property and serialise (`toJSON`) to {@link publicIdentity}, so logging an
 * identity does not print a secret.
 */
export interface Identity {
  /** `U…` user nkey of the signing key. */
  readonly principal: string;
  /** Ed25519 signing key. */
  readonly signingKey: SigningKey;
  /** 32-byte X25519 public key, published so others can seal to this identity. */
  readonly agreementPublicKey: Uint8Array;
  /** 32-byte X25519 secret key. */
  readonly agreementSecretKey: Uint8Array;
  /** Free-form human label (e.g. "alice laptop"). */
  readonly label?: string;
  /** ISO 8601 creation time. */
  readonly createdAt: string;
}

/** The safe-to-print half of an {@link Identity}. */
export interface PublicIdentity {
  principal: string;
  /** Ed25519 public key, 64 lowercase hex. */
  signingPublicKey: string;
  /** X25519 public key, 64 lowercase hex. */
  agreementPublicKey: string;
  label?: string;
  createdAt: string;
}

/** Why an identity file could not be read or written. */
export const IdentityFileErrorCode = {
  missing: "missing",
  corrupt: "corrupt",
  insecureMode: "insecure-mode",
  unsupportedVersion: "unsupported-version",
  exists: "exists",
} as const;
/** One of the {@link IdentityFileErrorCode} values. */
export type IdentityFileErrorCode = (typeof IdentityFileErrorCode)[keyof typeof IdentityFileErrorCode];

/** An identity file is missing, corrupt, readable by others, of an unknown version, or (on write) already exists. */
export class IdentityFileError extends Error {
  /** Stable reason code. */
  readonly code: IdentityFileErrorCode;
  /** The file concerned. */
  readonly path: string;
  constructor(code: IdentityFileErrorCode, path: string, message: string, options?: { cause?: unknown }) {
    super(`${message}: ${path}`, options);
    this.name = "IdentityFileError";
    this.code = code;
    this.path = path;
  }
}

function makeIdentity(signingKey: SigningKey, agreementSecretKey: Uint8Array, agreementPub: Uint8Array, createdAt: string, label?: string): Identity {
  const identity = {
    principal: signingKey.principal,
    signingKey,
    agreementPublicKey: agreementPub,
    createdAt,
    ...(label === undefined ? {} : { label }),
  };
  Object.defineProperty(identity, "agreementSecretKey", { value: agreementSecretKey, enumerable: false });
  Object.defineProperty(identity, "toJSON", { value: () => publicIdentity(identity as Identity), enumerable: false });
  return Object.freeze(identity) as Identity;
}

/** A new identity with fresh, independent Ed25519 and X25519 keys. Nothing is written to disk. */
export function createIdentity(opts?: { label?: string }): Identity {
  const agreement = generateAgreementKeyPair();
  return makeIdentity(SigningKey.generate(), agreement.secretKey, agreement.publicKey, new Date().toISOString(), opts?.label);
}

/** The public half of an identity; safe to print, log or share. */
export function publicIdentity(identity: Identity): PublicIdentity {
  return {
    principal: identity.principal,
    signingPublicKey: toHex(identity.signingKey.publicKey),
    agreementPublicKey: toHex(identity.agreementPublicKey),
    ...(identity.label === undefined ? {} : { label: identity.label }),
    createdAt: identity.createdAt,
  };
}

/** On-disk JSON (version 1). Public keys are stored too so a damaged file is detected, not silently rederived. */
interface IdentityFileV1 {
  kind: typeof IDENTITY_FILE_KIND;
  version: 1;
  principal: string;
  signingSeed: string;
  signingPublicKey: string;
  agreementSecretKey: string;
  agreementPublicKey: string;
  label?: string;
  createdAt: string;
}

function serialise(identity: Identity): string {
  const file: IdentityFileV1 = {
    kind: IDENTITY_FILE_KIND,
    version: IDENTITY_FILE_VERSION,
    principal: identity.principal,
    signingSeed: toHex(identity.signingKey.seedBytes()),
    signingPublicKey: toHex(identity.signingKey.publicKey),
    agreementSecretKey: toHex(identity.agreementSecretKey),
    agreementPublicKey: toHex(identity.agreementPublicKey),
    ...(identity.label === undefined ? {} : { label: identity.label }),
    createdAt: identity.createdAt,
  };
  return `${JSON.stringify(file, null, 2)}\n`;
}

function isErrno(e: unknown, code: string): boolean {
  return typeof e === "object" && e !== null && (e as { code?: unknown }).code === code;
}

/**
 * Writes an identity file atomically: a 0600 temp file in the same directory
 * is written and fsynced, then linked (or, with `overwrite`, renamed) into
 * place, so a crash leaves either no file or a complete one, never a torn key.
 * Refuses to replace an existing file unless `overwrite` (code "exists"): losing
 * a key file loses the principal. Creates the parent directory (0700) if needed.
 */
export async function writeIdentityFile(path: string, identity: Identity, opts?: { overwrite?: boolean }): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${basename(path)}.${toHex(randomBytes(8))}.tmp`);
  let fh: FileHandle | undefined;
  let placed = false;
  try {
    fh = await open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
    await fh.chmod(0o600); // the umask can only remove bits, but be explicit
    await fh.writeFile(serialise(identity), "utf8");
    await fh.sync();
    await fh.close();
    fh = undefined;
    if (opts?.overwrite === true) {
      await rename(tmp, path);
      placed = true;
    } else {
      // link(2) fails with EEXIST atomically, so there is no check-then-write race.
      try {
        await link(tmp, path);
      } catch (e) {
        if (isErrno(e, "EEXIST")) throw new IdentityFileError("exists", path, "identity file already exists", { cause: e });
        throw e;
      }
    }
  } finally {
    await fh?.close().catch(() => undefined);
    if (!placed) await unlink(tmp).catch(() => undefined);
  }
  // Persist the directory entry too; best effort (not every filesystem allows it).
  try {
    const dh = await open(dir, fsConstants.O_RDONLY);
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    // ignore: the file itself is durable
  }
}

const HEX32_RE = /^[0-9a-f]{64}$/;

function corrupt(path: string, why: string, cause?: unknown): IdentityFileError {
  return new IdentityFileError("corrupt", path, `identity file is corrupt (${why})`, cause === undefined ? undefined : { cause });
}

/**
 * Loads an identity file. Never creates, repairs or rewrites it (architecture §3:
 * a silently regenerated key would be a new principal). Errors
 * ({@link IdentityFileError}): "missing"; "insecure-mode" when group or
 * other permission bits are set (a readable key is a leaked key);
 * "unsupported-version"; "corrupt" for anything unparsable or inconsistent
 * (stored public keys or principal not matching the secrets).
 */
export async function loadIdentityFile(path: string): Promise<Identity> {
  let fh: FileHandle;
  try {
    fh = await open(path, fsConstants.O_RDONLY);
  } catch (e) {
    if (isErrno(e, "ENOENT")) throw new IdentityFileError("missing", path, "identity file not found", { cause: e });
    throw e;
  }
  let text: string;
  try {
    // fstat on the open handle: the mode checked is the mode of the bytes read.
    const st = await fh.stat();
    if (!st.isFile()) throw corrupt(path, "not a regular file");
    if ((st.mode & 0o077) !== 0) {
      throw new IdentityFileError("insecure-mode", path, `identity file mode ${(st.mode & 0o777).toString(8)} allows group/other access (chmod 600)`);
    }
    if (st.size > 64 * 1024) throw corrupt(path, "too large");
    text = await fh.readFile("utf8");
  } finally {
    await fh.close();
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw corrupt(path, "not JSON", e);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw corrupt(path, "not an object");
  const file = raw as Record<string, unknown>;
  if (file.kind !== IDENTITY_FILE_KIND) throw corrupt(path, "not a unibus identity");
  if (typeof file.version !== "number") throw corrupt(path, "no version");
  if (file.version !== IDENTITY_FILE_VERSION) {
    throw new IdentityFileError("unsupported-version", path, `identity file version ${file.version} is not supported (expected ${IDENTITY_FILE_VERSION})`);
  }
  for (const field of ["principal", "signingSeed", "signingPublicKey", "agreementSecretKey", "agreementPublicKey", "createdAt"] as const) {
    if (typeof file[field] !== "string") throw corrupt(path, `missing ${field}`);
  }
  const f = file as unknown as IdentityFileV1;
  if (f.label !== undefined && typeof f.label !== "string") throw corrupt(path, "label is not a string");
  for (const field of ["signingSeed", "signingPublicKey", "agreementSecretKey", "agreementPublicKey"] as const) {
    if (!HEX32_RE.test(f[field])) throw corrupt(path, `${field} is not 64 lowercase hex`);
  }
  if (Number.isNaN(Date.parse(f.createdAt))) throw corrupt(path, "createdAt is not a date");
  const signingKey = SigningKey.fromSeed(fromHex(f.signingSeed));
  if (!constantTimeEqual(signingKey.publicKey, fromHex(f.signingPublicKey)) || signingKey.principal !== f.principal) {
    throw corrupt(path, "signing key does not match its public key / principal");
  }
  const agreementSecretKey = fromHex(f.agreementSecretKey);
  const agreementPub = fromHex(f.agreementPublicKey);
  if (!constantTimeEqual(agreementPublicKey(agreementSecretKey), agreementPub)) {
    throw corrupt(path, "agreement key does not match its public key");
  }
  return makeIdentity(signingKey, agreementSecretKey, agreementPub, f.createdAt, f.label);
}
