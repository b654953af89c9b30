import { createHash } from "node:crypto";
import { NkeyPrefix, decodeNkeyPublic } from "@unibus/crypto";
import { CalloutSubject } from "@unibus/contracts";
import { InvalidRequestError } from "./errors.js";
import type { JwtSigner } from "./signer.js";
import { verifyEd25519 } from "./signer.js";

/** The JWT header nats-server 2.10 expects on every v2 token. */
const HEADER = { typ: "JWT", alg: "ed25519-nkey" } as const;
const HEADER_B64 = Buffer.from(JSON.stringify(HEADER)).toString("base64url");

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** RFC 4648 base32 without padding: the encoding nats-io/jwt (Go) uses for `jti`. */
function base32NoPad(src: Uint8Array): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const b of src) {
    value = ((value << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/** How every body {@link encodeJwtBytes} serialises starts: `jti` first, still empty. */
const EMPTY_JTI = '{"jti":""';
const JTI_OPEN = Buffer.from('{"jti":"', "latin1");
/** `header.`: what every signing input starts with. */
const HEADER_DOT = Buffer.from(`${HEADER_B64}.`, "latin1");
/** Unpadded base64url of a 64-byte Ed25519 signature. */
const SIG_B64_LENGTH = 86;

/**
 * The string a claim holds where {@link encodeJwtBytes} splices raw JSON in.
 * NUL never occurs in a claim we serialise (principals, server ids, account
 * names), and its escaped form must occur exactly once, else nothing is
 * signed (threat: a claim value carrying the mark to have raw JSON land in
 * a place of its choosing).
 */
export const SPLICE_MARK = "\u0000unibus-splice\u0000";
const SPLICE_JSON = JSON.stringify(SPLICE_MARK);

/**
 * A signed JWT as bytes, from {@link encodeJwtBytes}: base64url parts and
 * dots only, so it may stand inside a JSON string as it is (nothing to escape).
 */
export type JwtBytes = Buffer & { readonly __signedJwt: true };

const QUOTE = Buffer.from('"', "latin1");

/** A JSON string holding `jwt` byte for byte, for {@link encodeJwtBytes}'s `splice`. */
export function jsonStringOf(jwt: JwtBytes): Uint8Array[] {
  return [QUOTE, jwt, QUOTE];
}

/** Claims every NATS JWT carries; `jti`, `iat` and `iss` are filled by {@link encodeJwt}. */
export interface JwtClaims<N> {
  /** Subject: the key the token is about (for callout tokens, the server's fresh `user_nkey`). */
  sub: string;
  /** Audience: the server id (response) or the target account name (user JWT, config mode). */
  aud?: string;
  /** Display name; for a user JWT nats-server uses it as the connection's user name. */
  name?: string;
  /** Expiry, seconds since the epoch. On a user JWT the server disconnects at this time. */
  exp?: number;
  /** The NATS-specific body. */
  nats: N;
}

/** A decoded, signature-checked NATS JWT. */
export interface DecodedJwt<N> extends JwtClaims<N> {
  jti: string;
  iat: number;
  iss: string;
}

/**
 * Encodes and signs a NATS v2 JWT with a cached node:crypto key.
 *
 * `@nats-io/jwt` rebuilds a tweetnacl key per call (~35 ms per login,
 * nats-notes "Auth callout"); this path costs one SHA-256 and one Ed25519
 * signature. Wire format as nats-server 2.10.27 accepts it: base64url parts,
 * `jti` = base32(sha256(claims with `jti: ""`)), signature over `header.payload`.
 *
 * @param issuerPrefix - how the signer names itself in `iss` (`A` for an account issuer).
 */
export function encodeJwt<N>(claims: JwtClaims<N>, signer: JwtSigner, issuerPrefix: NkeyPrefix = NkeyPrefix.account): string {
  return encodeJwtBytes(claims, signer, issuerPrefix).toString("latin1");
}

/**
 * {@link encodeJwt} as bytes, built in Buffers end to end. A login JWT grows
 * with the principal's rooms (~110 KB at 1,000, and the response wraps it
 * in a second ~145 KB token): every string pass over it (UTF-8 for the
 * hash, a concatenation flattened before signing, the copy into the reply)
 * allocated another large string, so the claims are serialised once, hashed
 * and base64url-encoded as bytes, and signed in the output buffer itself.
 *
 * `splice`: raw JSON that replaces the one claim whose value is
 * {@link SPLICE_MARK} (quotes included), so a large part the caller already
 * holds as bytes (the user JWT inside the response, see {@link jsonStringOf};
 * a cached claims body) is not serialised again. The caller vouches that the
 * parts are valid JSON; the hash and the signature cover them like the rest.
 *
 * @throws RangeError if the claims name their own `jti`, or hold the mark
 *   other than exactly once when splicing.
 */
export function encodeJwtBytes<N>(claims: JwtClaims<N>, signer: JwtSigner, issuerPrefix: NkeyPrefix = NkeyPrefix.account, splice?: readonly Uint8Array[]): JwtBytes {
  const body: DecodedJwt<N> = {
    jti: "",
    iat: Math.floor(Date.now() / 1000),
    iss: signer.nkeyPublic(issuerPrefix),
    ...claims,
  };
  // Serialised once: `jti` is the first key and its value is base32 (nothing
  // to escape), so splicing it into the hashed bytes gives exactly what a
  // second JSON.stringify would.
  const unsigned = JSON.stringify(body);
  if (!unsigned.startsWith(EMPTY_JTI)) throw new RangeError("JWT claims must not name their own jti");
  let parts: Uint8Array[];
  if (splice === undefined) {
    parts = [Buffer.from(unsigned, "utf8")];
  } else {
    const at = unsigned.indexOf(SPLICE_JSON);
    if (at < 0 || unsigned.indexOf(SPLICE_JSON, at + 1) >= 0) throw new RangeError("JWT claims must hold the splice mark exactly once");
    parts = [Buffer.from(unsigned.slice(0, at), "utf8"), ...splice, Buffer.from(unsigned.slice(at + SPLICE_JSON.length), "utf8")];
  }
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part);
  const jti = Buffer.from(base32NoPad(hash.digest()), "latin1");
  const first = parts[0] as Buffer;
  parts[0] = first.subarray(JTI_OPEN.byteLength);
  const payload = Buffer.concat([JTI_OPEN, jti, ...parts]);
  const payloadB64 = payload.toString("base64url");
  const out = Buffer.allocUnsafe(HEADER_DOT.byteLength + payloadB64.length + 1 + SIG_B64_LENGTH);
  HEADER_DOT.copy(out, 0);
  // base64url is ASCII, so latin1 writes the same bytes as UTF-8, far cheaper.
  let end = HEADER_DOT.byteLength + out.write(payloadB64, HEADER_DOT.byteLength, "latin1");
  const sig = Buffer.from(signer.sign(out.subarray(0, end))).toString("base64url");
  out[end++] = 0x2e;
  end += out.write(sig, end, "latin1");
  // Every byte of the unsafe allocation is written; anything else is a bug, never sent.
  if (end !== out.byteLength) throw new RangeError("JWT length mismatch");
  return out as JwtBytes;
}

/**
 * Decodes a NATS JWT and verifies its Ed25519 signature against its own `iss`,
 * which must be an nkey of kind `issuerPrefix`. Says nothing about whether that
 * issuer is trusted: callers compare `iss` with what they expect.
 *
 * @param verify - false skips the signature check only (see {@link decodeAuthorizationRequest}).
 * @throws InvalidRequestError on any malformation or a bad signature.
 */
export function decodeJwt<N>(token: string, issuerPrefix: NkeyPrefix, verify = true): DecodedJwt<N> {
  const parts = token.split(".");
  if (parts.length !== 3) throw new InvalidRequestError("not a JWT");
  const [h, p, s] = parts as [string, string, string];
  let header: unknown;
  let body: unknown;
  try {
    header = JSON.parse(Buffer.from(h, "base64url").toString("utf8"));
    body = JSON.parse(Buffer.from(p, "base64url").toString("utf8"));
  } catch (cause) {
    throw new InvalidRequestError("JWT is not JSON", { cause });
  }
  if (!isRecord(header) || header.alg !== HEADER.alg || (header.typ !== "JWT" && header.typ !== "jwt")) {
    throw new InvalidRequestError("unsupported JWT header");
  }
  if (!isRecord(body) || typeof body.iss !== "string" || typeof body.sub !== "string" || !isRecord(body.nats)) {
    throw new InvalidRequestError("JWT claims incomplete");
  }
  const issuer = decodeNkeyPublic(issuerPrefix, body.iss);
  if (issuer === undefined) throw new InvalidRequestError("JWT issuer is not the expected key kind");
  if (verify && !verifyEd25519(issuer, Buffer.from(`${h}.${p}`), Buffer.from(s, "base64url"))) {
    throw new InvalidRequestError("JWT signature does not verify");
  }
  return body as unknown as DecodedJwt<N>;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The `nats` body of the request JWT nats-server sends to `$SYS.REQ.USER.AUTH` (ADR-26). */
export interface AuthorizationRequest {
  /** The server asking. `id` is the server's public nkey (`N…`) and signs the request. */
  server_id: { name: string; host: string; id: string; version?: string; cluster?: string; xkey?: string };
  /** Fresh per connect attempt; the response and the user JWT must name it (anti-replay). */
  user_nkey: string;
  /** Who is connecting. `nonce` is present only when the client sent a signature. */
  client_info: { host?: string; id?: number; user?: string; name?: string; kind?: string; type?: string; nonce?: string };
  /** The client's CONNECT options; `nkey` + `sig` are what unibus authenticates. */
  connect_opts: { jwt?: string; nkey?: string; sig?: string; auth_token?: string; user?: string; pass?: string; name?: string; lang?: string; version?: string; protocol?: number };
  /** `authorization_request`. */
  type?: string;
  /** 2 for nats-server 2.10. */
  version?: number;
}

/** Seconds of clock difference tolerated between nats-server and the callout host. */
const CLOCK_SKEW_S = 5;

/**
 * Decodes and checks an authorization request JWT: signed by the server key it
 * names (`iss` = `server_id.id`), audience `nats-authorization-request`, type
 * `authorization_request`, not expired. A request that fails any of these
 * could be a forgery published by someone other than the server (threat:
 * spoofed callout request used as a signing oracle) and gets no user JWT.
 *
 * `boxOpened`: the request arrived in an xkey box that opened, and its
 * signature is not checked again. The signature is by a key the request
 * itself names (nats-server makes a fresh server key at every start and
 * nothing pins it), so it proves the bytes are intact, never who sent them:
 * a forger able to publish on the auth subject signs with a key of its own
 * and passes. Who sent it rests on the subject's permissions (only the
 * server publishes there; answers go only to its `$SYS._INBOX.`), and the
 * box's Poly1305 tag already proves the bytes intact, from the holder of
 * the header's curve key. Skipping it loses no check and saves one Ed25519
 * verification per login. Without an xkey it is the only integrity check,
 * so it stays.
 *
 * @throws InvalidRequestError
 */
export function decodeAuthorizationRequest(token: string, nowS = Date.now() / 1000, boxOpened = false): DecodedJwt<AuthorizationRequest> {
  const claims = decodeJwt<AuthorizationRequest>(token, NkeyPrefix.server, !boxOpened);
  if (claims.aud !== CalloutSubject.requestAudience) throw new InvalidRequestError("unexpected audience");
  const req = claims.nats;
  if (req.type !== undefined && req.type !== "authorization_request") throw new InvalidRequestError("unexpected claim type");
  if (!isRecord(req.server_id) || typeof req.server_id.id !== "string" || req.server_id.id !== claims.iss) {
    throw new InvalidRequestError("request not signed by the server it names");
  }
  if (typeof req.user_nkey !== "string" || decodeNkeyPublic(NkeyPrefix.user, req.user_nkey) === undefined) {
    throw new InvalidRequestError("request has no valid user_nkey");
  }
  if (!isRecord(req.client_info) || !isRecord(req.connect_opts)) throw new InvalidRequestError("request incomplete");
  if (typeof claims.exp === "number" && claims.exp + CLOCK_SKEW_S < nowS) throw new InvalidRequestError("request expired");
  return claims;
}
