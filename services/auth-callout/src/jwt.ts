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

/** How every body {@link encodeJwt} serialises starts: `jti` first, still empty. */
const EMPTY_JTI = '{"jti":""';
const JTI_OPEN = '{"jti":"';

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
  const body: DecodedJwt<N> = {
    jti: "",
    iat: Math.floor(Date.now() / 1000),
    iss: signer.nkeyPublic(issuerPrefix),
    ...claims,
  };
  // Serialised once: `jti` is the first key and its value is base32 (nothing
  // to escape), so splicing it into the hashed text gives exactly what a
  // second JSON.stringify would. A login JWT grows with the principal's
  // rooms (~110 KB at 1,000), and each pass over it is on the login path.
  const unsigned = JSON.stringify(body);
  const jti = base32NoPad(createHash("sha256").update(unsigned).digest());
  if (!unsigned.startsWith(EMPTY_JTI)) throw new RangeError("JWT claims must not name their own jti");
  const json = `${JTI_OPEN}${jti}${unsigned.slice(JTI_OPEN.length)}`;
  const signingInput = `${HEADER_B64}.${Buffer.from(json).toString("base64url")}`;
  // base64url is ASCII, so latin1 gives the same bytes as UTF-8, ~8x faster.
  const sig = Buffer.from(signer.sign(Buffer.from(signingInput, "latin1"))).toString("base64url");
  return `${signingInput}.${sig}`;
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
