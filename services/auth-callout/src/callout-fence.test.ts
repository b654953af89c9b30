import { describe, expect, it } from "vitest";
import { NkeyPrefix, SigningKey, encodeNkeySeed, randomBytes } from "@unibus/crypto";
import { DenialCache } from "./denial-cache.js";
import { DenyReason } from "./handlers/authorize.js";
import type { CalloutContext } from "./handlers/callout.js";
import { handleCalloutRequest } from "./handlers/callout.js";
import type { AuthorizationRequest } from "./jwt.js";
import { encodeJwt } from "./jwt.js";
import type { BegunLookup, DirectoryEntry, PrincipalDirectory } from "./store/directory.js";

const keyOf = (prefix: NkeyPrefix): SigningKey => SigningKey.fromNkeySeed(encodeNkeySeed(prefix, randomBytes(32)));
const account = keyOf(NkeyPrefix.account);
const serverKey = keyOf(NkeyPrefix.server);
const client = SigningKey.generate();
const nonce = "fence-order-nonce";

function requestToken(sig: string): Uint8Array {
  const nats: AuthorizationRequest = {
    server_id: { name: "n", host: "127.0.0.1", id: serverKey.principal },
    user_nkey: SigningKey.generate().principal,
    client_info: { nonce, host: "127.0.0.1" },
    connect_opts: { protocol: 1, nkey: client.principal, sig },
    type: "authorization_request",
    version: 2,
  };
  const token = encodeJwt({ sub: account.principal, aud: "nats-authorization-request", nats, exp: Math.floor(Date.now() / 1000) + 2 }, serverKey, NkeyPrefix.server);
  return Buffer.from(token, "utf8");
}

const goodSig = Buffer.from(client.sign(Buffer.from(nonce, "utf8"))).toString("base64");
const badSig = Buffer.from(SigningKey.generate().sign(Buffer.from(nonce, "utf8"))).toString("base64");
const entry: DirectoryEntry = {
  user: { principal: client.principal, handle: "c", role: "member", status: "active", addedAt: new Date(0).toISOString(), addedBy: client.principal },
  rooms: null,
  revision: "1:0",
};

/** A directory that records when a fence is begun and refuses any read that did not begin one. */
function recordingDirectory(): PrincipalDirectory & { events: string[] } {
  const events: string[] = [];
  return {
    events,
    lookup: () => Promise.reject(new Error("an unfenced read")),
    begin(): BegunLookup {
      events.push("begin");
      return {
        leavesNow: true,
        lookup: async (principal) => {
          events.push(`lookup ${principal === client.principal ? "client" : principal}`);
          return entry;
        },
      };
    },
  };
}

function context(directory: PrincipalDirectory, denials?: DenialCache): CalloutContext {
  return { issuer: account, appAccount: "UNIBUS", directory, ...(denials !== undefined ? { authorize: { denials } } : {}) };
}

describe("the callout begins the directory's fence as a request arrives", () => {
  it("answers a login from the lookup begun on arrival, never from an unfenced read", async () => {
    const dir = recordingDirectory();
    const outcome = await handleCalloutRequest(context(dir), requestToken(goodSig), undefined);
    expect(outcome.kind === "answered" && outcome.result.ok).toBe(true);
    expect(dir.events).toEqual(["begin", "lookup client"]);
  });

  it("begins the fence before checking the request: a bad nonce signature, found after it left, is refused without a read", async () => {
    const dir = recordingDirectory();
    const outcome = await handleCalloutRequest(context(dir), requestToken(badSig), undefined);
    expect(outcome.kind === "answered" && !outcome.result.ok && outcome.result.reason).toBe(DenyReason.badSignature);
    expect(dir.events).toEqual(["begin"]);
  });

  it("begins no fence for a repeat answered from the denial cache (a retry storm costs no directory work)", async () => {
    const dir = recordingDirectory();
    const denials = new DenialCache();
    denials.remember(client.principal, DenyReason.revoked, denials.generation);
    const outcome = await handleCalloutRequest(context(dir, denials), requestToken(goodSig), undefined);
    expect(outcome.kind === "answered" && !outcome.result.ok && outcome.result.reason).toBe(DenyReason.revoked);
    expect(dir.events).toEqual([]);
  });
});
