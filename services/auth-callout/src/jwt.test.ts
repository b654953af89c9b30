import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { Algorithms, createAccount, createServer, encode, encodeAuthorizationResponse, decode as natsDecode } from "@nats-io/jwt";
import type { KeyPair } from "@nats-io/jwt";
import { NkeyPrefix, SigningKey, encodeNkeySeed, randomBytes } from "@unibus/crypto";
import { InvalidRequestError } from "./errors.js";
import { decodeAuthorizationRequest, decodeJwt, encodeJwt } from "./jwt.js";
import type { AuthorizationRequest } from "./jwt.js";

const keyOf = (prefix: NkeyPrefix): SigningKey => SigningKey.fromNkeySeed(encodeNkeySeed(prefix, randomBytes(32)));
const account = keyOf(NkeyPrefix.account);
const serverKey = keyOf(NkeyPrefix.server);

describe("encodeJwt", () => {
  it("produces tokens that @nats-io/jwt decodes and whose signature verifies", () => {
    const userKey = SigningKey.generate().principal;
    const token = encodeJwt(
      { sub: userKey, aud: "UNIBUS", name: "alice", nats: { pub: { allow: ["a"] }, sub: { allow: ["b"] }, type: "user", version: 2 } },
      account,
    );
    const claims = natsDecode<{ pub: { allow: string[] } }>(token); // throws on a bad signature
    expect(claims.iss).toBe(account.principal);
    expect(claims.iss.startsWith("A")).toBe(true);
    expect(claims.sub).toBe(userKey);
    expect(claims.aud).toBe("UNIBUS");
    expect(claims.nats.pub?.allow).toEqual(["a"]);
  });

  it("uses the nats v2 header and jti = base32(sha256(claims with an empty jti))", () => {
    const token = encodeJwt({ sub: "x", nats: { type: "user", version: 2 } }, account);
    const [h, p] = token.split(".") as [string, string];
    expect(JSON.parse(Buffer.from(h, "base64url").toString())).toEqual({ typ: "JWT", alg: "ed25519-nkey" });
    const body = JSON.parse(Buffer.from(p, "base64url").toString());
    const digest = createHash("sha256").update(JSON.stringify({ ...body, jti: "" })).digest();
    expect(body.jti).toMatch(/^[A-Z2-7]{52}$/);
    expect(Buffer.from(base32Decode(body.jti)).equals(digest)).toBe(true);
  });

  it("serialises a large, non-ASCII body once, exactly as JSON.stringify of the final claims", () => {
    const rooms = Array.from({ length: 1_000 }, (_, i) => `unibus.room.${i.toString(16).padStart(24, "0")}.>`);
    const token = encodeJwt({ sub: SigningKey.generate().principal, aud: "UNIBUS", name: "Zoë 🚀 \"quoted\"", nats: { pub: { allow: rooms }, sub: { allow: rooms }, type: "user", version: 2 } }, account);
    const [, p] = token.split(".") as [string, string];
    const raw = Buffer.from(p, "base64url");
    const body = JSON.parse(raw.toString("utf8"));
    expect(raw.equals(Buffer.from(JSON.stringify(body)))).toBe(true);
    expect(Buffer.from(base32Decode(body.jti)).equals(createHash("sha256").update(JSON.stringify({ ...body, jti: "" })).digest())).toBe(true);
    expect(natsDecode<{ pub: { allow: string[] } }>(token).nats.pub?.allow).toHaveLength(1_000); // the reference decoder verifies the signature
    expect(body.name).toBe("Zoë 🚀 \"quoted\"");
  });

  it("refuses claims that bring their own jti (the hash would not cover what is signed)", () => {
    const claims = { jti: "FORGED", sub: "x", nats: { type: "user", version: 2 } };
    expect(() => encodeJwt(claims, account)).toThrow(RangeError);
  });

  it("reads tokens signed by @nats-io/jwt (the reference encoder)", async () => {
    const token = await encodeAuthorizationResponse(SigningKey.generate().principal, serverKey.principal, createAccount(), { error: "nope" }, {});
    expect(decodeJwt<{ error: string }>(token, NkeyPrefix.account).nats.error).toBe("nope");
  });
});

describe("decodeAuthorizationRequest", () => {
  const userNkey = SigningKey.generate().principal;
  const request = (over: Partial<AuthorizationRequest> = {}): AuthorizationRequest => ({
    server_id: { name: "n", host: "127.0.0.1", id: serverKey.principal },
    user_nkey: userNkey,
    client_info: { nonce: "abc" },
    connect_opts: { protocol: 1 },
    type: "authorization_request",
    version: 2,
    ...over,
  });
  const sign = (nats: AuthorizationRequest, aud = "nats-authorization-request", key = serverKey): string =>
    encodeJwt({ sub: account.principal, aud, nats, exp: Math.floor(Date.now() / 1000) + 2 }, key, NkeyPrefix.server);

  it("accepts a request signed by the server it names", () => {
    expect(decodeAuthorizationRequest(sign(request())).nats.user_nkey).toBe(userNkey);
  });

  it("accepts a request encoded by @nats-io/jwt with a server key", async () => {
    const kp: KeyPair = createServer();
    const nats = request({ server_id: { name: "n", host: "h", id: kp.getPublicKey() } });
    const claims = { aud: "nats-authorization-request", sub: account.principal, nats, jti: "", iat: 0, iss: "", name: "" };
    const token = await encode(Algorithms.v2, claims, kp);
    expect(decodeAuthorizationRequest(token).nats.server_id.id).toBe(kp.getPublicKey());
  });

  it("rejects a wrong audience", () => {
    expect(() => decodeAuthorizationRequest(sign(request(), "something-else"))).toThrow(InvalidRequestError);
  });

  it("rejects a request signed by a server key other than server_id.id", () => {
    expect(() => decodeAuthorizationRequest(sign(request(), undefined, keyOf(NkeyPrefix.server)))).toThrow(/signed by the server/);
  });

  it("rejects a request whose issuer is not a server key", () => {
    const token = encodeJwt({ sub: "x", aud: "nats-authorization-request", nats: request() }, account);
    expect(() => decodeAuthorizationRequest(token)).toThrow(InvalidRequestError);
  });

  it("rejects a tampered payload", () => {
    const [h, , s] = sign(request()).split(".");
    const forged = Buffer.from(JSON.stringify({ iss: serverKey.principal, sub: "x", aud: "nats-authorization-request", nats: request() })).toString("base64url");
    expect(() => decodeAuthorizationRequest(`${h}.${forged}.${s}`)).toThrow(/signature/);
  });

  it("out of an opened xkey box: the signature is not checked again, every other check still is", () => {
    const [h, , sig] = sign(request()).split(".");
    const resigned = Buffer.from(JSON.stringify({ iss: serverKey.principal, sub: "x", aud: "nats-authorization-request", nats: request() })).toString("base64url");
    const now = Date.now() / 1000;
    // The box's tag proved the bytes intact; the signature, by a key the request names, adds nothing.
    expect(decodeAuthorizationRequest(`${h}.${resigned}.${sig}`, now, true).nats.user_nkey).toBe(userNkey);
    expect(() => decodeAuthorizationRequest(`${h}.${resigned}.${sig}`, now, false)).toThrow(/signature/);
    expect(() => decodeAuthorizationRequest(sign(request(), "something-else"), now, true)).toThrow(InvalidRequestError);
    expect(() => decodeAuthorizationRequest(sign(request(), undefined, keyOf(NkeyPrefix.server)), now, true)).toThrow(/signed by the server/);
    const expired = encodeJwt({ sub: "x", aud: "nats-authorization-request", nats: request(), exp: 1000 }, serverKey, NkeyPrefix.server);
    expect(() => decodeAuthorizationRequest(expired, now, true)).toThrow(/expired/);
    expect(() => decodeAuthorizationRequest("a.b.c", now, true)).toThrow(InvalidRequestError);
  });

  it("rejects an expired request", () => {
    const token = encodeJwt({ sub: "x", aud: "nats-authorization-request", nats: request(), exp: 1000 }, serverKey, NkeyPrefix.server);
    expect(() => decodeAuthorizationRequest(token)).toThrow(/expired/);
  });

  it("rejects garbage", () => {
    expect(() => decodeAuthorizationRequest("not-a-jwt")).toThrow(InvalidRequestError);
    expect(() => decodeAuthorizationRequest("a.b.c")).toThrow(InvalidRequestError);
  });
});

function base32Decode(s: string): Uint8Array {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const ch of s) {
    value = (value << 5) | alphabet.indexOf(ch);
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Uint8Array.from(out);
}
