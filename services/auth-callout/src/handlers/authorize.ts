import type { AuditDenialRecord } from "@unibus/contracts";
import { NkeyPrefix, decodeNkeyPublic } from "@unibus/crypto";
import type { DenialCache } from "../denial-cache.js";
import { verifyEd25519 } from "../signer.js";
import type { PrincipalDirectory } from "../store/directory.js";
import type { AuthorizationRequest } from "../jwt.js";
import type { Permissions, Role } from "../permissions.js";
import { UserStatus, permissionsFor } from "../permissions.js";

/**
 * Why a connect was denied. Goes to the callout's log and the server's log
 * (as the response `error`), never to the client, which sees only
 * "Authorization Violation".
 */
export const DenyReason = {
  noNkey: "no nkey presented",
  malformedNkey: "nkey is not a user nkey",
  badSignature: "nonce signature does not verify",
  unknown: "principal not in allowlist",
  revoked: "principal revoked",
  directoryUnavailable: "directory unavailable",
  rateLimited: "too many refused logins from this address",
} as const;
/** One of the {@link DenyReason} values. */
export type DenyReason = (typeof DenyReason)[keyof typeof DenyReason];

/** The stable code of each {@link DenyReason} in audit records and the `reason` label of metrics. */
export const DenyCode = {
  [DenyReason.noNkey]: "malformed",
  [DenyReason.malformedNkey]: "malformed",
  [DenyReason.badSignature]: "bad_signature",
  [DenyReason.unknown]: "unknown_principal",
  [DenyReason.revoked]: "revoked",
  [DenyReason.directoryUnavailable]: "directory_unavailable",
  [DenyReason.rateLimited]: "rate_limited",
} as const satisfies Record<DenyReason, AuditDenialRecord["reason"]>;

/** The outcome of {@link authorize}. */
export type AuthorizeResult =
  | { ok: true; principal: string; role: Role | "bootstrap"; permissions: Permissions }
  | {
      ok: false;
      reason: DenyReason;
      principal?: string;
      cause?: unknown;
      /**
       * Set when the denial cache answered. `report` undefined: count it but
       * write no audit record (see {@link DenialCache.lookup}).
       */
      cached?: { report: number | undefined; delayMs: number };
      /** Hold the answer this long (server-side back-off of a repeat offender). */
      delayMs?: number;
    };

/**
 * Permission sets by (principal, directory revision). A repeat login by an
 * unchanged principal then costs only the JWT signing. Bounded LRU: the keys
 * are principals that passed the nonce check, but there may be many.
 */
export class PermissionCache {
  readonly #map = new Map<string, Permissions>();
  readonly #max: number;

  constructor(max = 10_000) {
    this.#max = max;
  }

  get(principal: string, revision: string): Permissions | undefined {
    const key = `${principal}@${revision}`;
    const hit = this.#map.get(key);
    if (hit !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, hit);
    }
    return hit;
  }

  set(principal: string, revision: string, permissions: Permissions): void {
    const key = `${principal}@${revision}`;
    this.#map.set(key, permissions);
    if (this.#map.size > this.#max) {
      const oldest = this.#map.keys().next().value;
      if (oldest !== undefined) this.#map.delete(oldest);
    }
  }

  /** Number of cached sets (for tests and stats). */
  get size(): number {
    return this.#map.size;
  }
}

/** Options of {@link authorize}. */
export interface AuthorizeOptions {
  /**
   * Let identities that are not in the allowlist (nodes joining) connect with
   * replica-handshake-only permissions. Default false: unknown is denied.
   */
  bootstrapAccess?: boolean;
  /** Shared permission cache; without one every login recomputes. */
  cache?: PermissionCache;
  /** Denial cache and per-address limit; without one every refusal is fully checked. */
  denials?: DenialCache;
}

// Ed25519 signatures are 64 bytes; nats.js sends base64 (padded), Go base64url.
const SIG_BASE64_RE = /^[A-Za-z0-9+/_-]{86}(?:==)?$/;

/**
 * Decides one connect attempt (callout.go style: the service is built around
 * this one function; decoding, signing and replying live in callout.ts).
 *
 * nats-server does not check the nonce signature of an nkey it does not know,
 * so it is verified here: `connect_opts.sig` over `client_info.nonce` against
 * `connect_opts.nkey` (threat: anyone claiming a member's public key).
 * Then the principal must be in the allowlist and active. A directory error
 * denies (fail closed).
 *
 * With a {@link DenialCache}, a principal refused as unknown or revoked a
 * moment ago is refused again before any signature check or directory read,
 * and an address over its refusal budget is refused outright (principals that
 * recently logged in excepted): both only ever deny.
 */
export async function authorize(
  request: AuthorizationRequest,
  directory: PrincipalDirectory,
  options: AuthorizeOptions = {},
): Promise<AuthorizeResult> {
  const nkey = request.connect_opts.nkey;
  if (typeof nkey !== "string" || nkey === "") return { ok: false, reason: DenyReason.noNkey };
  const publicKey = decodeNkeyPublic(NkeyPrefix.user, nkey);
  if (publicKey === undefined) return { ok: false, reason: DenyReason.malformedNkey };
  const denials = options.denials;
  const address = request.client_info.host;
  const cached = denials?.lookup(nkey);
  if (cached !== undefined) return { ok: false, reason: cached.reason, principal: nkey, cached: { report: cached.report, delayMs: cached.delayMs }, delayMs: cached.delayMs };
  if (denials?.addressLimited(address, nkey) === true) {
    return { ok: false, reason: DenyReason.rateLimited, principal: nkey, delayMs: Math.max(denials.rateLimitDelayMs, denials.strike(nkey)) };
  }
  const generation = denials?.generation ?? 0;
  const result = await decide(request, nkey, publicKey, directory, options);
  if (denials === undefined) return result;
  if (result.ok) {
    denials.noteAdmitted(nkey);
    return result;
  }
  denials.noteRefusal(address);
  // Only answers decided by the directory after the signature verified:
  // a forged signature must not get a real member's key locked out.
  if (result.reason === DenyReason.unknown || result.reason === DenyReason.revoked) denials.remember(nkey, result.reason, generation);
  // Our own outage is not the client's doing: answered at once, so a
  // member retries as soon as the directory is back (a reconnect storm).
  if (result.reason === DenyReason.directoryUnavailable) return result;
  // Held even though fully checked: the back-off outlives the cache entry.
  const delayMs = denials.strike(nkey);
  return delayMs > 0 ? { ...result, delayMs } : result;
}

async function decide(request: AuthorizationRequest, nkey: string, publicKey: Uint8Array, directory: PrincipalDirectory, options: AuthorizeOptions): Promise<AuthorizeResult> {
  const nonce = request.client_info.nonce;
  const sig = request.connect_opts.sig;
  if (typeof nonce !== "string" || nonce === "" || typeof sig !== "string" || !SIG_BASE64_RE.test(sig)) {
    return { ok: false, reason: DenyReason.badSignature, principal: nkey };
  }
  if (!verifyEd25519(publicKey, Buffer.from(nonce, "utf8"), Buffer.from(sig, "base64"))) {
    return { ok: false, reason: DenyReason.badSignature, principal: nkey };
  }

  let entry;
  try {
    entry = await directory.lookup(nkey);
  } catch (cause) {
    return { ok: false, reason: DenyReason.directoryUnavailable, principal: nkey, cause };
  }
  if (entry === null) {
    if (options.bootstrapAccess === true) {
      return { ok: true, principal: nkey, role: "bootstrap", permissions: permissionsFor({ kind: "bootstrap", principal: nkey }, null) };
    }
    return { ok: false, reason: DenyReason.unknown, principal: nkey };
  }
  if (entry.user.status !== UserStatus.active) return { ok: false, reason: DenyReason.revoked, principal: nkey };

  const cached = options.cache?.get(nkey, entry.revision);
  if (cached !== undefined) return { ok: true, principal: nkey, role: entry.user.role, permissions: cached };
  let permissions: Permissions;
  try {
    permissions = permissionsFor({ kind: "user", user: entry.user }, entry.rooms);
  } catch (cause) {
    // An unknown role or similar corrupt record: deny rather than guess.
    return { ok: false, reason: DenyReason.directoryUnavailable, principal: nkey, cause };
  }
  options.cache?.set(nkey, entry.revision, permissions);
  return { ok: true, principal: nkey, role: entry.user.role, permissions };
}
