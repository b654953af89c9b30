import { describe, expect, it } from "vitest";
import { SigningKey } from "@unibus/crypto";
import { storedUser } from "@unibus/testing";
import { DenyReason, PermissionCache, authorize } from "./handlers/authorize.js";
import { DenialCache } from "./denial-cache.js";
import type { DirectoryEntry, PrincipalDirectory } from "./store/directory.js";
import type { AuthorizationRequest } from "./jwt.js";
import type { UserRecord } from "./permissions.js";

const alice = SigningKey.generate();
const NONCE = "nonce-from-server";

function request(opts: { key?: SigningKey; nonce?: string; signNonce?: string; sig?: string; nkey?: string } = {}): AuthorizationRequest {
  const key = opts.key ?? alice;
  const sig = opts.sig ?? Buffer.from(key.sign(Buffer.from(opts.signNonce ?? opts.nonce ?? NONCE))).toString("base64");
  return {
    server_id: { name: "n", host: "h", id: "N" },
    user_nkey: SigningKey.generate().principal,
    client_info: { nonce: opts.nonce ?? NONCE },
    connect_opts: { nkey: opts.nkey ?? key.principal, sig, protocol: 1 },
  };
}

class MapDirectory implements PrincipalDirectory {
  lookups = 0;
  constructor(readonly entries = new Map<string, DirectoryEntry>()) {}
  async lookup(principal: string): Promise<DirectoryEntry | null> {
    this.lookups++;
    return this.entries.get(principal) ?? null;
  }
}

const directoryWith = (...users: UserRecord[]): MapDirectory =>
  new MapDirectory(new Map(users.map((u) => [u.principal, { user: u, rooms: { principal: u.principal, rooms: { r1: "member" } }, revision: "1:1" }])));

describe("authorize", () => {
  it("grants an active member who signed the server nonce", async () => {
    const r = await authorize(request(), directoryWith(storedUser(alice.principal)));
    expect(r).toMatchObject({ ok: true, principal: alice.principal, role: "member" });
    if (r.ok) expect(r.permissions.sub.allow).toContain("unibus.room.r1.>");
  });

  it("accepts the signature in base64url as Go clients send it", async () => {
    const sig = Buffer.from(alice.sign(Buffer.from(NONCE))).toString("base64url");
    expect((await authorize(request({ sig }), directoryWith(storedUser(alice.principal)))).ok).toBe(true);
  });

  it("denies a signature over a different nonce (the server does not check it for unknown nkeys)", async () => {
    const r = await authorize(request({ signNonce: "another-nonce" }), directoryWith(storedUser(alice.principal)));
    expect(r).toMatchObject({ ok: false, reason: DenyReason.badSignature });
  });

  it("denies someone presenting a member's public key with their own signature", async () => {
    const mallory = SigningKey.generate();
    const sig = Buffer.from(mallory.sign(Buffer.from(NONCE))).toString("base64");
    const r = await authorize(request({ nkey: alice.principal, sig }), directoryWith(storedUser(alice.principal)));
    expect(r).toMatchObject({ ok: false, reason: DenyReason.badSignature });
  });

  it("denies a connect without nkey, a malformed nkey, a missing nonce or signature", async () => {
    const dir = directoryWith(storedUser(alice.principal));
    const base = request();
    expect(await authorize({ ...base, connect_opts: { protocol: 1 } }, dir)).toMatchObject({ ok: false, reason: DenyReason.noNkey });
    expect(await authorize({ ...base, connect_opts: { ...base.connect_opts, nkey: "UNOTAKEY" } }, dir)).toMatchObject({ ok: false, reason: DenyReason.malformedNkey });
    expect(await authorize({ ...base, client_info: {} }, dir)).toMatchObject({ ok: false, reason: DenyReason.badSignature });
    expect(await authorize({ ...base, connect_opts: { nkey: alice.principal, protocol: 1 } }, dir)).toMatchObject({ ok: false, reason: DenyReason.badSignature });
  });

  it("denies an unknown principal unless bootstrap access is enabled", async () => {
    const dir = directoryWith();
    expect(await authorize(request(), dir)).toMatchObject({ ok: false, reason: DenyReason.unknown });
    const r = await authorize(request(), dir, { bootstrapAccess: true });
    expect(r).toMatchObject({ ok: true, role: "bootstrap" });
    if (r.ok) expect(r.permissions.pub.allow).toEqual(["unibus.v1.replica.handshake.*"]);
  });

  it("denies a revoked principal, even with bootstrap access enabled", async () => {
    const dir = directoryWith(storedUser(alice.principal, "revoked"));
    expect(await authorize(request(), dir, { bootstrapAccess: true })).toMatchObject({ ok: false, reason: DenyReason.revoked });
  });

  it("fails closed when the directory cannot answer", async () => {
    const broken: PrincipalDirectory = { lookup: async () => Promise.reject(new Error("kv down")) };
    expect(await authorize(request(), broken, { bootstrapAccess: true })).toMatchObject({ ok: false, reason: DenyReason.directoryUnavailable });
  });

  it("holds a principal's repeated refusals, but never a directory outage's nor a login", async () => {
    const denials = new DenialCache({ delayInitialMs: 50, addressThreshold: 1_000 });
    const stranger = SigningKey.generate();
    const empty = directoryWith();
    const held = async (): Promise<number | undefined> => {
      const r = await authorize(request({ key: stranger }), empty, { denials });
      return r.ok ? -1 : r.delayMs;
    };
    expect(await held()).toBeUndefined(); // the first refusal is prompt
    expect(await held()).toBe(50);
    expect(await held()).toBe(100);
    // Not the client's doing: each refusal of an outage is answered at once.
    const broken: PrincipalDirectory = { lookup: async () => Promise.reject(new Error("no quorum")) };
    for (let i = 0; i < 3; i++) {
      const r = await authorize(request(), broken, { denials });
      expect(r).toMatchObject({ ok: false, reason: DenyReason.directoryUnavailable });
      expect(r.ok ? -1 : r.delayMs).toBeUndefined();
    }
    // A grant carries no delay, and clears the back-off of whoever logged in.
    denials.strike(alice.principal);
    denials.strike(alice.principal);
    expect(await authorize(request(), directoryWith(storedUser(alice.principal)), { denials })).toMatchObject({ ok: true });
    expect(denials.strike(alice.principal)).toBe(0);
  });

  it("reuses the cached permission set for an unchanged revision and recomputes after a change", async () => {
    const dir = directoryWith(storedUser(alice.principal));
    const cache = new PermissionCache();
    const first = await authorize(request(), dir, { cache });
    const second = await authorize(request(), dir, { cache });
    expect(first.ok && second.ok && first.permissions === second.permissions).toBe(true);
    dir.entries.set(alice.principal, { user: storedUser(alice.principal), rooms: { principal: alice.principal, rooms: { r2: "owner" } }, revision: "1:2" });
    const third = await authorize(request(), dir, { cache });
    expect(third.ok && third.permissions.sub.allow).toEqual(["unibus.room.r2.>", `_INBOX.${alice.principal}.>`]);
  });
});
