/// <reference lib="dom" />
// Loading an identity file in the browser, and keeping it (only if the user
// asks) in IndexedDB encrypted under a passphrase. The signing key is built
// by @unibus/crypto's own SigningKey, so the public key and principal are
// checked exactly as the CLI checks them.
import { constantTimeEqual, fromHex, SigningKey, toHex } from "@unibus/crypto";

/** Why an identity could not be loaded; shown to the user as is. */
export class IdentityLoadError extends Error {}

const HEX32 = /^[0-9a-f]{64}$/;
const MAX_FILE_BYTES = 64 * 1024;

/**
 * Parses a unibus identity file (the JSON `unibus up` writes as admin.id)
 * and returns its signing key. A file whose stored public key or principal
 * does not match its seed is refused: it would sign as someone else.
 */
export function parseIdentityText(text: string): SigningKey {
  if (text.length > MAX_FILE_BYTES) throw new IdentityLoadError("the file is too large to be an identity file");
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new IdentityLoadError("the file is not JSON: choose a unibus identity file (admin.id)");
  }
  const f = raw as Record<string, unknown> | null;
  if (typeof f !== "object" || f === null || f.kind !== "unibus-identity") throw new IdentityLoadError("not a unibus identity file");
  if (f.version !== 1) throw new IdentityLoadError(`identity file version ${String(f.version)} is not supported`);
  const { signingSeed, signingPublicKey, principal } = f;
  if (typeof signingSeed !== "string" || !HEX32.test(signingSeed) || typeof signingPublicKey !== "string" || !HEX32.test(signingPublicKey)) {
    throw new IdentityLoadError("the identity file is corrupt (signing key)");
  }
  const key = SigningKey.fromSeed(fromHex(signingSeed));
  if (!constantTimeEqual(key.publicKey, fromHex(signingPublicKey)) || key.principal !== principal) {
    throw new IdentityLoadError("the identity file is corrupt (the signing key does not match its principal)");
  }
  return key;
}

const DB_NAME = "unibus-panel";
const STORE = "identity";
const RECORD = "saved";
// PBKDF2 work factor: a stolen browser profile costs an attacker this many
// SHA-256 rounds per passphrase guess.
const PBKDF2_ITERATIONS = 600_000;
const MIN_PASSPHRASE = 8;

interface SavedIdentity {
  readonly salt: Uint8Array;
  readonly iv: Uint8Array;
  readonly ciphertext: ArrayBuffer;
}

function openDb(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB unavailable"));
  });
}

async function withStore<T>(mode: IDBTransactionMode, op: (s: IDBObjectStore) => IDBRequest): Promise<T> {
  const db = await openDb();
  try {
    return await new Promise<T>((resolve, reject) => {
      const req = op(db.transaction(STORE, mode).objectStore(STORE));
      req.onsuccess = () => resolve(req.result as T);
      req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
    });
  } finally {
    db.close();
  }
}

async function wrappingKey(passphrase: string, salt: Uint8Array): Promise<CryptoKey> {
  const base = await crypto.subtle.importKey("raw", new TextEncoder().encode(passphrase), "PBKDF2", false, ["deriveKey"]);
  return crypto.subtle.deriveKey({ name: "PBKDF2", hash: "SHA-256", salt: salt as BufferSource, iterations: PBKDF2_ITERATIONS }, base, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

/** Stores the seed encrypted with AES-256-GCM under a PBKDF2 key of the passphrase. */
export async function rememberIdentity(key: SigningKey, passphrase: string): Promise<void> {
  if (passphrase.length < MIN_PASSPHRASE) throw new IdentityLoadError(`the passphrase must have at least ${MIN_PASSPHRASE} characters`);
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const seed = new TextEncoder().encode(toHex(key.seedBytes()));
  const ciphertext = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, await wrappingKey(passphrase, salt), seed);
  seed.fill(0);
  const saved: SavedIdentity = { salt, iv, ciphertext };
  await withStore("readwrite", (s) => s.put(saved, RECORD));
}

/** The remembered key, or an error when none is stored or the passphrase is wrong. */
export async function recallIdentity(passphrase: string): Promise<SigningKey> {
  const saved = await withStore<SavedIdentity | undefined>("readonly", (s) => s.get(RECORD));
  if (saved === undefined) throw new IdentityLoadError("no identity is remembered in this browser");
  let plain: ArrayBuffer;
  try {
    plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: saved.iv as BufferSource }, await wrappingKey(passphrase, saved.salt), saved.ciphertext);
  } catch {
    throw new IdentityLoadError("wrong passphrase (or the remembered identity is damaged)");
  }
  return SigningKey.fromSeed(fromHex(new TextDecoder().decode(plain)));
}

/** Deletes the remembered identity. */
export async function forgetIdentity(): Promise<void> {
  await withStore("readwrite", (s) => s.delete(RECORD));
}
