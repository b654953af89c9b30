import { describe, expect, it } from "vitest";
import { SigningKey } from "@unibus/crypto";
import { permissionsFor } from "./permissions.js";
import type { Permissions, RoomsRecord, UserRecord } from "./permissions.js";

const alice = SigningKey.generate().principal;
const user = (over: Partial<UserRecord> = {}): UserRecord => ({
  principal: alice,
  handle: "alice",
  role: "member",
  status: "active",
  addedAt: "2026-11-23T00:00:00Z",
  addedBy: "admin",
  ...over,
});
const rooms = (r: RoomsRecord["rooms"], principal = alice): RoomsRecord => ({ principal, rooms: r });

const FORBIDDEN = ["$JS.API.>", "$KV.>", "$SYS.>", "$O.>", ">", "_INBOX.>", "unibus.room.>"];

function expectNoBroadGrant(p: Permissions): void {
  for (const s of [...p.pub.allow, ...p.sub.allow]) {
    expect(FORBIDDEN).not.toContain(s);
    expect(s.startsWith("$JS") || s.startsWith("$KV") || s.startsWith("$SYS") || s.startsWith("$O")).toBe(false);
  }
  expect(p.pub.allow.length).toBeGreaterThan(0);
  expect(p.sub.allow.length).toBeGreaterThan(0);
}

describe("permissionsFor", () => {
  it("a member may request any service and use its rooms and its own inbox, nothing else", () => {
    const p = permissionsFor({ kind: "user", user: user() }, rooms({ r1: "owner", r2: "member" }));
    expect(p).toEqual({
      pub: { allow: ["unibus.v1.*.>", "unibus.room.r1.>", "unibus.room.r2.>"] },
      sub: { allow: ["unibus.room.r1.>", "unibus.room.r2.>", `_INBOX.${alice}.>`] },
    });
    expectNoBroadGrant(p);
  });

  it("a member in no room gets the control plane and its inbox only", () => {
    const p = permissionsFor({ kind: "user", user: user() }, null);
    expect(p).toEqual({ pub: { allow: ["unibus.v1.*.>"] }, sub: { allow: [`_INBOX.${alice}.>`] } });
  });

  it("an admin additionally publishes to $SRV.> for micro discovery", () => {
    const p = permissionsFor({ kind: "user", user: user({ role: "admin" }) }, rooms({ r1: "member" }));
    expect(p.pub.allow).toEqual(["unibus.v1.*.>", "unibus.room.r1.>", "$SRV.>"]);
    expect(p.sub.allow).toEqual(["unibus.room.r1.>", `_INBOX.${alice}.>`]);
    expectNoBroadGrant(p);
  });

  it("a node or unknown identity (bootstrap) reaches only the replica handshake and its inbox", () => {
    const p = permissionsFor({ kind: "bootstrap", principal: alice }, rooms({ r1: "member" }));
    expect(p).toEqual({ pub: { allow: ["unibus.v1.replica.handshake.*"] }, sub: { allow: [`_INBOX.${alice}.>`] } });
  });

  it("room ids that are not a single safe token are skipped, never widened", () => {
    const p = permissionsFor({ kind: "user", user: user() }, rooms({ "*": "member", ">": "member", "a.b": "member", "": "member", ok: "member" }));
    expect(p.sub.allow).toEqual(["unibus.room.ok.>", `_INBOX.${alice}.>`]);
    expect(p.pub.allow).toEqual(["unibus.v1.*.>", "unibus.room.ok.>"]);
  });

  it("a rooms record keyed to another principal grants nothing", () => {
    const p = permissionsFor({ kind: "user", user: user() }, rooms({ r1: "member" }, SigningKey.generate().principal));
    expect(p.sub.allow).toEqual([`_INBOX.${alice}.>`]);
  });

  it("no JetStream API at all, not even direct get on the member's own rooms (history goes through rooms.history)", () => {
    for (const role of ["member", "admin"] as const) {
      const p = permissionsFor({ kind: "user", user: user({ role }) }, rooms({ r1: "owner", r2: "member" }));
      expect(p.pub.allow.filter((x) => x.startsWith("$JS"))).toEqual([]);
    }
  });

  it("refuses a revoked user, an unknown role and a principal that is not a user nkey", () => {
    expect(() => permissionsFor({ kind: "user", user: user({ status: "revoked" }) }, null)).toThrow(RangeError);
    expect(() => permissionsFor({ kind: "user", user: user({ role: "root" as never }) }, null)).toThrow(RangeError);
    expect(() => permissionsFor({ kind: "bootstrap", principal: "*" }, null)).toThrow(RangeError);
  });
});
