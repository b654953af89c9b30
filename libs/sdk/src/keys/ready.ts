/**
 * Key preparation for an application, in the SDK rather than in each tool:
 * one awaited call that gets an identity from "member of an E2E room" to
 * "holds the room key and can publish", and says at each step what it is
 * waiting for (contracts/specs/room-keys.md "Getting ready").
 */
import { ErrorCode, UnibusError } from "@unibus/contracts";
import { toBase64Url } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import type { UnibusClient } from "../client.js";
import { RoomAccessTimeoutError, waitForRoomAccess } from "../rooms/access.js";
import type { RoomEpochKey } from "../rooms/keyring.js";
import type { Room } from "../rooms/room.js";
import type { EpochStore } from "./epoch-floor.js";
import { KeysServiceKeyring } from "./keyring.js";
import { announceEpoch, rekeyRoom, waitForRoomKey } from "./rekey.js";

/** What {@link readyRoom} is doing or waiting for; `onStage` gets each once, in this order (some may be skipped). */
export const RoomReadyStage = {
  checkingMembership: "checking_membership",
  waitingForAccess: "waiting_for_room_access",
  registeringAgreementKey: "registering_agreement_key",
  startingFirstEpoch: "starting_first_epoch",
  waitingForEpoch: "waiting_for_owner_to_seal_epoch",
  ready: "ready",
} as const;
/** One of the {@link RoomReadyStage} values. */
export type RoomReadyStage = (typeof RoomReadyStage)[keyof typeof RoomReadyStage];

/** What each stage waits for, in words a user can be shown. */
export const RoomReadyStageText: Record<RoomReadyStage, string> = {
  checking_membership: "checking that this identity is a member of the room",
  waiting_for_room_access: "waiting for the connection to be granted the room (a membership change reaches it by reconnecting)",
  registering_agreement_key: "registering this identity's agreement key with the keys service",
  starting_first_epoch: "starting the room's first key epoch (the room has none and this identity owns it)",
  waiting_for_owner_to_seal_epoch: "waiting for an owner of the room to seal a key epoch to this identity's agreement key (an owner must be online)",
  ready: "holds the room key",
};

/** Options of {@link readyRoom}. */
export interface ReadyRoomOptions {
  /** Give up after this long, with UnibusError 503 `room_not_ready` naming the stage it was waiting in. Default 30 000 ms. */
  timeoutMs?: number;
  /** Called as each stage starts. */
  onStage?: (stage: RoomReadyStage, text: string) => void;
  /** Keeps the highest verified epoch per room across restarts (see `FileEpochStore`). */
  epochStore?: EpochStore;
  /** Stops waiting (rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** A room ready to use, and what it took. */
export interface ReadyRoom {
  /** The room, opened on the client with {@link keyring}. */
  readonly room: Room;
  /** The keyring over the keys service (verified shares, epochs only forward). */
  readonly keyring: KeysServiceKeyring;
  /** The current epoch and key when the call returned. */
  readonly key: RoomEpochKey;
  /** The caller's role in the room. */
  readonly role: "owner" | "member";
  /** True when this call registered the identity's agreement key. */
  readonly registered: boolean;
  /** The epoch this call started, when the room had none and the caller owns it. */
  readonly rekeyedTo: number | undefined;
}

/** Options of {@link prepareRoomKeys}. */
export interface PrepareRoomKeysOptions {
  /** How long to wait for the connection's room grant. Default 10 000 ms. */
  accessTimeoutMs?: number;
  /** Called as each stage starts. */
  onStage?: (stage: RoomReadyStage, text: string) => void;
  /** Keeps the highest verified epoch per room across restarts (see `FileEpochStore`). */
  epochStore?: EpochStore;
}

/** What {@link prepareRoomKeys} did. */
export interface RoomKeysPrepared {
  /** A keyring over the keys service, for `client.room(roomId, keyring)`. */
  readonly keyring: KeysServiceKeyring;
  /** True when this call registered the identity's agreement key. */
  readonly registered: boolean;
  /** The epoch this call started (and announced), when the room had none and the caller owns it. */
  readonly rekeyedTo: number | undefined;
  /** The caller's role in the room. */
  readonly role: "owner" | "member";
}

/**
 * The part of {@link readyRoom} that does not wait for a key: checks
 * membership in the room's verified membership log, waits for the
 * connection's room grant, registers the agreement key unless the keys
 * service already lists this exact key, and starts (and announces) epoch 1
 * as an owner of a room with none. For a tool that lets its user act while
 * the key is still on its way (`waitForRoomKey` next).
 *
 * @throws UnibusError 403 `not_a_member`; RoomLogError; RoomAccessTimeoutError.
 */
export async function prepareRoomKeys(client: UnibusClient, identity: Identity, roomId: string, opts: PrepareRoomKeysOptions = {}): Promise<RoomKeysPrepared> {
  if (identity.principal !== client.principal) throw new UnibusError(ErrorCode.BadRequest, "identity_mismatch", "the identity is not the one the client connected as");
  const enter = (s: RoomReadyStage): void => opts.onStage?.(s, RoomReadyStageText[s]);
  enter(RoomReadyStage.checkingMembership);
  // From the verified membership log, not `rooms.get`: the keyring and any
  // rekey below judge by the log, so a log that does not verify (RoomLogError)
  // or does not list this identity stops here rather than after a rekey.
  const log = await client.roomLogs.sync(roomId);
  const me = log.membersAt(log.headSeq).get(client.principal);
  if (me === undefined) throw new UnibusError(ErrorCode.Forbidden, "not_a_member", `not a member of room ${roomId}`);
  const role = me === "owner" ? "owner" : "member";
  enter(RoomReadyStage.waitingForAccess);
  await waitForRoomAccess(client, roomId, { timeoutMs: opts.accessTimeoutMs ?? 10_000 });
  const listed = (await client.keys.agreementKeys(roomId)).members.find((m) => m.principal === client.principal);
  let registered = false;
  if (listed?.agreementKey !== toBase64Url(identity.agreementPublicKey)) {
    enter(RoomReadyStage.registeringAgreementKey);
    await client.keys.registerAgreementKey(identity);
    registered = true;
  }
  let rekeyedTo: number | undefined;
  if (role === "owner" && (await client.keys.epochs(roomId)).epochs.length === 0) {
    enter(RoomReadyStage.startingFirstEpoch);
    rekeyedTo = (await rekeyRoom(client, identity.signingKey, roomId)).epoch;
    // Members already waiting (they registered first) fetch their share now.
    announceEpoch(client.nc, roomId, rekeyedTo);
  }
  const keyring = new KeysServiceKeyring(client, identity, opts.epochStore === undefined ? {} : { epochStore: opts.epochStore });
  return { keyring, registered, rekeyedTo, role };
}

/**
 * Gets `identity` ready to talk in E2E room `roomId` in one awaited call:
 * {@link prepareRoomKeys}, then waits until a share of the newest epoch
 * verifies and opens (asking the room's owners for one meanwhile), and opens
 * the room. `onStage` says what it is doing; a timeout names the stage.
 *
 * @throws UnibusError 403 `not_a_member`; 503 `room_not_ready` on timeout,
 *   with the stage it was waiting in; 409 `epoch_rollback` from the keyring.
 */
export async function readyRoom(client: UnibusClient, identity: Identity, roomId: string, opts: ReadyRoomOptions = {}): Promise<ReadyRoom> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  const onOuterAbort = (): void => abort.abort(opts.signal?.reason);
  opts.signal?.addEventListener("abort", onOuterAbort);
  let stage: RoomReadyStage = RoomReadyStage.checkingMembership;
  const onStage = (s: RoomReadyStage): void => {
    stage = s;
    opts.onStage?.(s, RoomReadyStageText[s]);
  };
  const notReady = (cause: unknown): UnibusError =>
    new UnibusError(ErrorCode.Unavailable, "room_not_ready", `room ${roomId} not ready after ${timeoutMs} ms: still ${RoomReadyStageText[stage]}`, { cause });
  try {
    const prepared = await prepareRoomKeys(client, identity, roomId, {
      accessTimeoutMs: Math.max(1, deadline - Date.now()),
      onStage,
      ...(opts.epochStore === undefined ? {} : { epochStore: opts.epochStore }),
    }).catch((err: unknown) => {
      throw err instanceof RoomAccessTimeoutError ? notReady(err) : err;
    });
    const key = await waitForRoomKey(client, prepared.keyring, roomId, { signal: abort.signal, onWaiting: () => onStage(RoomReadyStage.waitingForEpoch) }).catch((err: unknown) => {
      throw abort.signal.aborted && opts.signal?.aborted !== true ? notReady(err) : err;
    });
    onStage(RoomReadyStage.ready);
    return { ...prepared, room: client.room(roomId, prepared.keyring), key };
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener("abort", onOuterAbort);
  }
}
