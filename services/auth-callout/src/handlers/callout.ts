import { NkeyPrefix, decodeNkeyPublic } from "@unibus/crypto";
import { CalloutSubject } from "@unibus/contracts";
import type { AuthorizeOptions, AuthorizeResult } from "./authorize.js";
import { authorize } from "./authorize.js";
import type { BegunLookup, PrincipalDirectory } from "../store/directory.js";
import { EncryptionMismatchError, InvalidRequestError } from "../errors.js";
import type { AuthorizationRequest, JwtBytes } from "../jwt.js";
import { SPLICE_MARK, decodeAuthorizationRequest, encodeJwtBytes, jsonStringOf } from "../jwt.js";
import type { Permissions } from "../permissions.js";
import type { CalloutXkey } from "../xkey.js";
import type { JwtSigner } from "../signer.js";

/** The `nats` body of the user JWT the callout issues. */
export interface UserClaimsBody {
  pub: Permissions["pub"];
  sub: Permissions["sub"];
  subs: number;
  data: number;
  payload: number;
  type: "user";
  version: 2;
}

/** The `nats` body of the authorization response JWT. */
export interface AuthorizationResponseBody {
  type: "authorization_response";
  version: 2;
  jwt?: string;
  error?: string;
}

/** Everything the callout needs to answer requests. */
export interface CalloutContext {
  /** The account key named as `issuer` in `auth_callout`; signs responses and user JWTs. */
  issuer: JwtSigner;
  /** The account clients are placed in (config mode: the user JWT's `aud`). */
  appAccount: string;
  /** When set, requests must be encrypted and responses are sealed to the server's xkey. */
  xkey?: CalloutXkey;
  directory: PrincipalDirectory;
  authorize?: AuthorizeOptions;
  /** Seconds a granted session lasts before the server disconnects it; unset = until kicked. */
  sessionTtlSeconds?: number;
}

/** What happened to one request, for logs and stats. */
export type CalloutOutcome =
  | { kind: "answered"; request: AuthorizationRequest; result: AuthorizeResult; reply: Uint8Array }
  /** The request could not be trusted or decrypted: no response is signed (the server times out → denied). */
  | { kind: "rejected"; error: Error };

// Every JWT starts with base64url of `{"t`/`{"typ`: "eyJ0". Anything else is a sealed box.
function looksLikeJwt(data: Uint8Array): boolean {
  return data.byteLength >= 4 && data[0] === 0x65 && data[1] === 0x79 && data[2] === 0x4a && data[3] === 0x30;
}

/**
 * Builds the signed user JWT for a granted connect: `sub` = the server's fresh
 * `user_nkey`, `aud` = target account, `name` = principal, explicit pub and sub
 * allow lists (never absent: absent means allow-all).
 */
export function encodeUserJwt(ctx: CalloutContext, request: AuthorizationRequest, principal: string, permissions: Permissions): string {
  return encodeUserJwtBytes(ctx, request, principal, permissions).toString("latin1");
}

// The claims body serialised per permission set. Sets are cached by
// (principal, directory revision) and a change makes a new set, so a body
// keyed by the set's identity can never outlive the grant it describes.
const userBodies = new WeakMap<Permissions, Uint8Array>();

function userBodyOf(permissions: Permissions): Uint8Array {
  let body = userBodies.get(permissions);
  if (body === undefined) {
    const nats: UserClaimsBody = { pub: permissions.pub, sub: permissions.sub, subs: -1, data: -1, payload: -1, type: "user", version: 2 };
    body = Buffer.from(JSON.stringify(nats), "utf8");
    userBodies.set(permissions, body);
  }
  return body;
}

/** {@link encodeUserJwt} as bytes; the permission lists are serialised once per set. */
export function encodeUserJwtBytes(ctx: CalloutContext, request: AuthorizationRequest, principal: string, permissions: Permissions): JwtBytes {
  const claims: { sub: string; aud: string; name: string; nats: string; exp?: number } = {
    sub: request.user_nkey,
    aud: ctx.appAccount,
    name: principal,
    nats: SPLICE_MARK,
  };
  if (ctx.sessionTtlSeconds !== undefined) claims.exp = Math.floor(Date.now() / 1000) + ctx.sessionTtlSeconds;
  return encodeJwtBytes(claims, ctx.issuer, NkeyPrefix.account, [userBodyOf(permissions)]);
}

/** Builds the signed authorization response carrying either a user JWT or an error. */
export function encodeAuthorizationResponse(ctx: CalloutContext, request: AuthorizationRequest, body: { jwt: string | JwtBytes } | { error: string }): string {
  return encodeAuthorizationResponseBytes(ctx, request, body).toString("latin1");
}

/** {@link encodeAuthorizationResponse} as bytes; a user JWT given as bytes goes in without another pass. */
export function encodeAuthorizationResponseBytes(ctx: CalloutContext, request: AuthorizationRequest, body: { jwt: string | JwtBytes } | { error: string }): JwtBytes {
  const claims = { sub: request.user_nkey, aud: request.server_id.id };
  if ("jwt" in body && typeof body.jwt !== "string") {
    const nats = { type: "authorization_response", version: 2, jwt: SPLICE_MARK } as const;
    return encodeJwtBytes({ ...claims, nats }, ctx.issuer, NkeyPrefix.account, jsonStringOf(body.jwt));
  }
  const nats: AuthorizationResponseBody = { type: "authorization_response", version: 2, ...(body as { jwt: string } | { error: string }) };
  return encodeJwtBytes({ ...claims, nats }, ctx.issuer, NkeyPrefix.account);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * The request's claims read WITHOUT checking the server's signature, and
 * only when its presented nkey has a cached refusal: the answer is then a
 * denial whatever the request says, so verifying it would buy nothing
 * (threat model: a forged request can at most obtain a signed refusal for
 * itself; it never reaches a grant, which always takes the full path). With
 * an xkey the box that opened has proved the bytes intact (not their sender).
 * Anything unusual falls through to the full path.
 */
function cachedRefusal(ctx: CalloutContext, token: string): { request: AuthorizationRequest; result: AuthorizeResult } | undefined {
  const denials = ctx.authorize?.denials;
  if (denials === undefined) return undefined;
  const dot = token.indexOf(".");
  const end = token.indexOf(".", dot + 1);
  if (dot < 0 || end < 0) return undefined;
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(token.slice(dot + 1, end), "base64url").toString("utf8"));
  } catch {
    return undefined;
  }
  const nats = isObject(claims) ? claims["nats"] : undefined;
  if (!isObject(nats) || !isObject(nats["server_id"]) || !isObject(nats["client_info"]) || !isObject(nats["connect_opts"])) return undefined;
  const nkey = nats["connect_opts"]["nkey"];
  const userNkey = nats["user_nkey"];
  if (typeof nkey !== "string" || typeof userNkey !== "string" || typeof nats["server_id"]["id"] !== "string") return undefined;
  if (decodeNkeyPublic(NkeyPrefix.user, userNkey) === undefined) return undefined;
  const hit = denials.lookup(nkey);
  if (hit === undefined) return undefined;
  const request = nats as unknown as AuthorizationRequest;
  return { request, result: { ok: false, reason: hit.reason, principal: nkey, cached: { report: hit.report, delayMs: hit.delayMs }, delayMs: hit.delayMs } };
}

/**
 * Handles one message from `$SYS.REQ.USER.AUTH`: decrypt (if an xkey is
 * configured), begin the directory's fence, decode and check the server's
 * request (its signature only without an xkey: see
 * decodeAuthorizationRequest), {@link authorize} from the begun lookup, sign
 * the response, encrypt it back. Denials are signed responses carrying
 * `error` (never a user JWT). A request that fails its checks (a box that
 * does not open, a malformed or expired request) gets no signed answer.
 *
 * @param serverXkeyHeader - value of the `Nats-Server-Xkey` header, if any.
 */
export async function handleCalloutRequest(ctx: CalloutContext, data: Uint8Array, serverXkeyHeader: string | undefined): Promise<CalloutOutcome> {
  let request: AuthorizationRequest;
  let token: string;
  let begun: BegunLookup | undefined;
  const encrypted = !looksLikeJwt(data);
  try {
    if (ctx.xkey !== undefined) {
      // Threat: a downgrade to plaintext would expose client connect options.
      if (!encrypted) throw new EncryptionMismatchError("service requires encryption but the server sent plaintext");
      if (serverXkeyHeader === undefined || serverXkeyHeader === "") throw new InvalidRequestError(`missing ${CalloutSubject.xkeyHeader} header`);
      const opened = ctx.xkey.open(data, serverXkeyHeader);
      // A JWT is ASCII: latin1 reads it without a copy or UTF-8 decoding; a
      // non-ASCII byte would change the signed bytes and fail verification.
      token = Buffer.from(opened.buffer, opened.byteOffset, opened.byteLength).toString("latin1");
    } else {
      if (encrypted) throw new EncryptionMismatchError("server encrypts but the service has no xkey");
      token = Buffer.from(data).toString("utf8");
    }
    // A retry storm's repeats stop here: one signature (the refusal), no verification, no directory read.
    const cached = cachedRefusal(ctx, token);
    if (cached !== undefined) return answer(ctx, cached.request, cached.result, serverXkeyHeader);
    // The directory's fence is begun now, before the checks below: when it
    // can leave at once its round trip runs beside their CPU work instead of
    // after it (one turn of the event loop lets nats.js write it first). It
    // is sent after this request arrived, which is what read-your-writes
    // needs. When it must wait for an earlier fence, the work runs now.
    begun = ctx.directory.begin?.();
    if (begun?.leavesNow === true) await new Promise<void>((resolve) => setImmediate(resolve));
    // With an xkey the box that opened already proved the request intact (see decodeAuthorizationRequest).
    request = decodeAuthorizationRequest(token, Date.now() / 1000, ctx.xkey !== undefined).nats;
    if (ctx.xkey !== undefined && request.server_id.xkey !== serverXkeyHeader) {
      throw new InvalidRequestError("server xkey in request differs from header");
    }
  } catch (error) {
    return { kind: "rejected", error: error instanceof Error ? error : new InvalidRequestError(String(error)) };
  }

  return answer(ctx, request, await authorize(request, begun ?? ctx.directory, ctx.authorize), serverXkeyHeader);
}

function answer(ctx: CalloutContext, request: AuthorizationRequest, result: AuthorizeResult, serverXkeyHeader: string | undefined): CalloutOutcome {
  let reply: Uint8Array = result.ok
    ? encodeAuthorizationResponseBytes(ctx, request, { jwt: encodeUserJwtBytes(ctx, request, result.principal, result.permissions) })
    : encodeAuthorizationResponseBytes(ctx, request, { error: result.reason });
  if (ctx.xkey !== undefined && serverXkeyHeader !== undefined) reply = ctx.xkey.seal(reply, serverXkeyHeader);
  return { kind: "answered", request, result, reply };
}
