import { createHash } from "node:crypto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { Algorithms, createAccount, createServer, encode, encodeAuthorizationResponse, decode as natsDecode } from "@nats-io/jwt";
import type { KeyPair } from "@nats-io/jwt";
import { NkeyPrefix, SigningKey, encodeNkeySeed, randomBytes } from "@unibus/crypto";
import { InvalidRequestError } from "./errors.js";
import { SPLICE_MARK, decodeAuthorizationRequest, decodeJwt, encodeJwt, encodeJwtBytes, jsonStringOf } from "./jwt.js";
import type { AuthorizationRequest } from "./jwt.js";
import { encodeAuthorizationResponse as encodeCalloutResponse, encodeAuthorizationResponseBytes, encodeUserJwt, encodeUserJwtBytes } from "./handlers/callout.js";
import type { CalloutContext } from "./handlers/callout.js";
import { permissionsFor } from "./permissions.js";

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

describe("encodeJwtBytes and the login tokens built on it", () => {
  afterEach(() => {
    vi.useRealTimers();
  });
  // Ed25519 is deterministic: with `iat` pinned, the same claims give the same bytes.
  const pinned = (): void => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(new Date("2026-01-02T03:04:05Z"));
  };
  const roomIds = Array.from({ length: 1_000 }, (_, i) => i.toString(16).padStart(24, "0"));
  const member = SigningKey.generate().principal;
  const user = { principal: member, handle: "h", role: "member" as const, status: "active" as const, addedAt: new Date(0).toISOString(), addedBy: member };
  const ctx = { issuer: account, appAccount: "UNIBUS", directory: { lookup: () => Promise.resolve(null) } } as CalloutContext;
  const request = { user_nkey: SigningKey.generate().principal, server_id: { id: serverKey.nkeyPublic(NkeyPrefix.server), name: "n", host: "h" }, client_info: {}, connect_opts: {} } as AuthorizationRequest;

  it("gives encodeJwt's token byte for byte, and a splice gives exactly what serialising the spliced value would", () => {
    pinned();
    const nats = { pub: { allow: roomIds.map((r) => `unibus.room.${r}.>`) }, sub: { allow: ["b"] }, type: "user", version: 2 };
    const plain = encodeJwt({ sub: member, aud: "UNIBUS", name: "Zoë", nats }, account);
    expect(encodeJwtBytes({ sub: member, aud: "UNIBUS", name: "Zoë", nats }, account).toString("latin1")).toBe(plain);
    const spliced = encodeJwtBytes({ sub: member, aud: "UNIBUS", name: "Zoë", nats: SPLICE_MARK }, account, NkeyPrefix.account, [Buffer.from(JSON.stringify(nats))]);
    expect(spliced.toString("latin1")).toBe(plain);
    expect(natsDecode<{ pub: { allow: string[] } }>(plain).nats.pub?.allow).toHaveLength(1_000);
  });

  it("refuses a splice when the claims hold the mark nowhere or twice (raw JSON must land in one known place)", () => {
    const raw = [Buffer.from("{}")];
    expect(() => encodeJwtBytes({ sub: "x", nats: { type: "user" } }, account, NkeyPrefix.account, raw)).toThrow(RangeError);
    expect(() => encodeJwtBytes({ sub: "x", name: SPLICE_MARK, nats: SPLICE_MARK }, account, NkeyPrefix.account, raw)).toThrow(RangeError);
  });

  it("a response carrying the user JWT as bytes is the response carrying it as a string; the reference decoder reads both layers", () => {
    pinned();
    const permissions = permissionsFor({ kind: "user", user }, { principal: member, rooms: Object.fromEntries(roomIds.map((r) => [r, "member" as const])) });
    const jwt = encodeUserJwtBytes(ctx, request, member, permissions);
    expect(jwt.toString("latin1")).toBe(encodeUserJwt(ctx, request, member, permissions));
    const asBytes = encodeAuthorizationResponseBytes(ctx, request, { jwt });
    expect(asBytes.toString("latin1")).toBe(encodeCalloutResponse(ctx, request, { jwt: jwt.toString("latin1") }));
    expect(jsonStringOf(jwt).map((p) => Buffer.from(p).toString("latin1")).join("")).toBe(JSON.stringify(jwt.toString("latin1")));
    const response = natsDecode<{ jwt: string }>(asBytes.toString("latin1"));
    expect(response.aud).toBe(request.server_id.id);
    const inner = natsDecode<{ pub: { allow: string[] }; sub: { allow: string[] }; subs: number }>(response.nats.jwt ?? "");
    expect(inner.sub).toBe(request.user_nkey);
    expect(inner.name).toBe(member);
    expect(inner.nats.sub?.allow).toEqual(permissions.sub.allow);
    expect(inner.nats.pub?.allow).toEqual(permissions.pub.allow);
    expect(inner.nats.subs).toBe(-1);
  });

  it("the user claims serialised per permission set follow the set: a room removed is absent from the next token", () => {
    const two = permissionsFor({ kind: "user", user }, { principal: member, rooms: { r1: "member", r2: "member" } });
    const one = permissionsFor({ kind: "user", user }, { principal: member, rooms: { r1: "member" } });
    const subOf = (p: typeof one): string[] => natsDecode<{ sub: { allow: string[] } }>(encodeUserJwt(ctx, request, member, p)).nats.sub?.allow ?? [];
    expect(subOf(two)).toContain("unibus.room.r2.>");
    expect(subOf(two)).toEqual(subOf(two)); // second encode from the serialised body
    expect(subOf(one)).not.toContain("unibus.room.r2.>");
    expect(subOf(one)).toContain("unibus.room.r1.>");
  });

  it("a session lifetime still lands in the spliced user JWT, after the permissions", () => {
    pinned();
    const permissions = permissionsFor({ kind: "user", user }, { principal: member, rooms: { r1: "member" } });
    const token = encodeUserJwt({ ...ctx, sessionTtlSeconds: 60 }, request, member, permissions);
    const claims = natsDecode<{ sub: { allow: string[] } }>(token);
    expect(claims.exp).toBe(Math.floor(Date.now() / 1000) + 60);
    expect(claims.nats.sub?.allow).toEqual(permissions.sub.allow);
    const payload = Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8");
    expect(payload.indexOf('"exp"')).toBeGreaterThan(payload.indexOf('"nats"'));
  });

  it("a refusal carries only the error", () => {
    const refusal = natsDecode<{ jwt?: string; error?: string }>(encodeAuthorizationResponseBytes(ctx, request, { error: "principal revoked" }).toString("latin1"));
    expect(refusal.nats.error).toBe("principal revoked");
    expect(refusal.nats.jwt).toBeUndefined();
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
