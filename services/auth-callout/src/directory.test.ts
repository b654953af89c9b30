import { describe, expect, it } from "vitest";
import type { KV } from "@nats-io/kv";
import { createIdentity } from "@unibus/crypto";
import { LeaderOutOfContactError } from "@unibus/kit";
import { KvPrincipalDirectory } from "./store/directory.js";
import { DirectoryError } from "./errors.js";

const alice = createIdentity().principal;
const user = { principal: alice, handle: "alice", role: "member", status: "active", addedAt: new Date(0).toISOString(), addedBy: alice };

/** A bucket holding `record` under alice, whose stream leader last heard from its two peers `silentMs` ago. */
function bucket(record: unknown, silentMs: number): KV {
  return {
    async get(key: string) {
      return record === null || key !== alice ? null : { operation: "PUT", revision: 7, json: () => record };
    },
    async status() {
      return { streamInfo: { config: { name: "KV_x" }, cluster: { leader: "n1", replicas: [1, 2].map(() => ({ current: true, active: silentMs * 1e6 })) } } };
    },
  } as unknown as KV;
}

describe("KvPrincipalDirectory leader-contact fence", () => {
  it("answers from leaders in contact with their quorum", async () => {
    const entry = await new KvPrincipalDirectory(bucket(user, 800), bucket(null, 800)).lookup(alice);
    expect(entry?.user.principal).toBe(alice);
  });

  it("refuses (directory unavailable) when a directory bucket's leader has lost contact with its peers, even though it still answers", async () => {
    for (const [users, rooms] of [
      [bucket(user, 5_000), bucket(null, 800)],
      [bucket(user, 800), bucket(null, 5_000)],
    ] as const) {
      const err = await new KvPrincipalDirectory(users, rooms).lookup(alice).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DirectoryError);
      expect((err as DirectoryError).cause).toBeInstanceOf(LeaderOutOfContactError);
    }
  });
});
