// A keys-service outage (a node failover, a leader election) must not turn
// into minutes of rejected frames: a failed share lookup is remembered only
// briefly, while a real answer ("no share") keeps its long miss TTL so a
// frame naming a bogus epoch still costs one lookup per TTL.
import { expect, it } from "vitest";
import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import type { KeysGetShareReply } from "@unibus/contracts";
import { createIdentity } from "@unibus/crypto";
import { eventually } from "@unibus/testing";
import type { RoomLogs } from "../rooms/membership-log.js";
import type { KeysApi } from "./api.js";
import { KeysServiceKeyring } from "./keyring.js";

/** A keys API whose getShare answers from `script` in turn (the last entry repeats), counting calls. */
function scriptedClient(script: (() => Promise<KeysGetShareReply>)[]): { client: ConstructorParameters<typeof KeysServiceKeyring>[0]; calls: () => number } {
  let calls = 0;
  const keys = { getShare: () => script[Math.min(calls++, script.length - 1)]!() } as unknown as KeysApi;
  return { client: { keys, roomLogs: {} as unknown as RoomLogs }, calls: () => calls };
}

const unavailable = (): Promise<never> => Promise.reject(new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "keys store unavailable"));
const notFound = (): Promise<never> => Promise.reject(new UnibusError(ErrorCode.NotFound, ErrorReason.NotFound, "no share"));

it("a lookup that failed in an outage is asked again after the short error TTL, not the miss TTL", async () => {
  const { client, calls } = scriptedClient([unavailable, notFound]);
  const ring = new KeysServiceKeyring(client, createIdentity(), { missTtlMs: 60_000, errorTtlMs: 50 });
  await expect(ring.get("r1", 1)).rejects.toMatchObject({ code: ErrorCode.Unavailable });
  // Answered from memory at once: a burst of frames is one lookup, not one each.
  expect(await ring.get("r1", 1)).toBeUndefined();
  expect(calls()).toBe(1);
  // Past the error TTL the service is asked again (the outage may be over).
  await eventually(
    () => ring.get("r1", 1).then(() => calls()),
    (n) => n === 2,
    { timeoutMs: 2_000 },
  );
});

it("a real answer (no share) is still remembered for the whole miss TTL", async () => {
  const { client, calls } = scriptedClient([notFound]);
  const ring = new KeysServiceKeyring(client, createIdentity(), { missTtlMs: 60_000, errorTtlMs: 1 });
  expect(await ring.get("r1", 7)).toBeUndefined();
  // Well past the error TTL, still one lookup: the short TTL is for outages only.
  const until = performance.now() + 100;
  while (performance.now() < until) expect(await ring.get("r1", 7)).toBeUndefined();
  expect(calls()).toBe(1);
});
