import { ErrorCode, UnibusError } from "@unibus/contracts";
import { fromBase64Url, openSealed, publicKeyFromPrincipal, toBase64Url, verifySignature } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import type { KeysGetShareReply } from "@unibus/contracts";
import type { RoomLogs } from "../rooms/membership-log.js";
import { NoRoomKeyError } from "../rooms/keyring.js";
import type { RoomEpochKey, RoomKeySource } from "../rooms/keyring.js";
import type { KeysApi } from "./api.js";
import { EpochFloor } from "./epoch-floor.js";
import type { EpochStore } from "./epoch-floor.js";
import { ShareSetFormat, epochStatementBytes, principalsHash, rootFromProof, shareLeaf } from "./share-set.js";

function byteOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Why a share was refused. */
export const UntrustedShareReason = {
  /** The reply is for another room or epoch than asked. */
  wrongEpoch: "wrong_epoch",
  /** The Merkle proof does not lead from the caller's leaf to a root. */
  badProof: "bad_proof",
  /** The distributor's signature over the epoch statement does not verify. */
  badSignature: "bad_signature",
  /** The signer was not an owner at the epoch's log position per the verified log (e.g. a key the server injected). */
  distributorNotOwner: "distributor_not_owner",
  /** The epoch's log position or head hash disagrees with the verified membership log. */
  logMismatch: "log_mismatch",
  /** The share set's recipients are not exactly the verified membership at the epoch's log position. */
  recipientsMismatch: "recipients_mismatch",
  /** The sealed share does not open with this identity's agreement key, or holds no 32-byte key. */
  unopenable: "unopenable",
} as const;
/** One of the {@link UntrustedShareReason} values. */
export type UntrustedShareReason = (typeof UntrustedShareReason)[keyof typeof UntrustedShareReason];

/**
 * A room-key share that failed verification. Never fall back to it: the keys
 * service (or whoever wrote its bucket) could have made it up.
 */
export class UntrustedShareError extends Error {
  override readonly name = "UntrustedShareError";
  constructor(
    readonly roomId: string,
    readonly epoch: number,
    readonly reason: UntrustedShareReason,
    options?: { cause?: unknown },
  ) {
    super(`room ${roomId} epoch ${epoch}: share rejected (${reason})`, options);
  }
}

/** Options of {@link KeysServiceKeyring}. */
export interface KeysServiceKeyringOptions {
  /** How long `current()` reuses the newest epoch before asking again. Default 1000 ms. */
  currentTtlMs?: number;
  /** Keeps the highest verified epoch per room across restarts (default: in memory, for the life of the keyring). */
  epochStore?: EpochStore;
  /** How long an epoch the caller holds no (valid) share of is answered from memory, without asking the service. Default 30 000 ms. */
  missTtlMs?: number;
  /**
   * How long a lookup that failed without an answer (the keys service
   * unavailable or timing out, the connection lost) is answered from memory.
   * Short, so a node failover costs a second of rejected frames, not
   * `missTtlMs` of them. Default 1000 ms.
   */
  errorTtlMs?: number;
}

/** What the keyring needs from a client. */
export interface KeyringClient {
  readonly keys: KeysApi;
  /** The verified membership logs: who the distributor and the recipients must be. */
  readonly roomLogs: RoomLogs;
}

/**
 * A {@link RoomKeySource} backed by the keys service: it fetches the caller's
 * sealed share, verifies the room's membership log up to the epoch's signed
 * position, that the distributor was an owner there and that the share set
 * went to exactly the members there, then the distributor's signature over
 * the share set (via the Merkle proof), opens the share with the identity's
 * agreement secret, and caches verified keys (and each epoch's members, for
 * {@link members}) per epoch. A share failing any check throws
 * {@link UntrustedShareError}; no share at all yields `undefined` / {@link NoRoomKeyError}.
 */
export class KeysServiceKeyring implements RoomKeySource {
  readonly #client: KeyringClient;
  readonly #identity: Identity;
  readonly #ttlMs: number;
  readonly #keys = new Map<string, Map<number, Uint8Array>>();
  readonly #members = new Map<string, Map<number, ReadonlySet<string>>>();
  readonly #current = new Map<string, { epoch: number; at: number }>();
  readonly #floor: EpochFloor;
  readonly #missTtlMs: number;
  readonly #errorTtlMs: number;
  /** `room/epoch` → when a miss stops being remembered: a frame naming a bogus epoch costs one fetch per TTL, not one per frame. */
  readonly #misses = new Map<string, number>();
  readonly #inflight = new Map<string, Promise<Uint8Array | undefined>>();

  constructor(client: KeyringClient, identity: Identity, opts: KeysServiceKeyringOptions = {}) {
    this.#client = client;
    this.#identity = identity;
    this.#ttlMs = opts.currentTtlMs ?? 1_000;
    this.#floor = new EpochFloor(opts.epochStore);
    this.#missTtlMs = opts.missTtlMs ?? 30_000;
    this.#errorTtlMs = Math.min(opts.errorTtlMs ?? 1_000, this.#missTtlMs);
  }

  async current(roomId: string): Promise<RoomEpochKey> {
    const cached = this.#current.get(roomId);
    if (cached !== undefined && performance.now() - cached.at < this.#ttlMs) {
      const key = this.#keys.get(roomId)?.get(cached.epoch);
      if (key !== undefined) return { epoch: cached.epoch, key };
    }
    const reply = await this.#fetch(roomId, undefined);
    if (reply === undefined) throw new NoRoomKeyError(roomId);
    // Refused before any verification: an older epoch offered as current is an error whatever its signature.
    await this.#floor.checkCurrent(roomId, reply.epoch);
    const key = await this.#verifyAndOpen(roomId, reply.epoch, reply);
    await this.#floor.record(roomId, reply.epoch);
    this.#current.set(roomId, { epoch: reply.epoch, at: performance.now() });
    return { epoch: reply.epoch, key };
  }

  async get(roomId: string, epoch: number): Promise<Uint8Array | undefined> {
    const cached = this.#keys.get(roomId)?.get(epoch);
    if (cached !== undefined) return cached;
    const id = `${roomId}/${epoch}`;
    const missUntil = this.#misses.get(id);
    if (missUntil !== undefined) {
      if (performance.now() < missUntil) return undefined;
      this.#misses.delete(id);
    }
    let pending = this.#inflight.get(id);
    if (pending === undefined) {
      pending = this.#getFresh(roomId, epoch).then(
        (key) => {
          if (key === undefined) this.#miss(id, this.#missTtlMs);
          return key;
        },
        (err: unknown) => {
          // A refused share is an answer; anything else (503, timeout, lost
          // connection) is an outage that must not reject the epoch's frames
          // for the whole miss TTL. Still remembered briefly, so a flood of
          // frames does not turn into a flood of lookups on a struggling service.
          this.#miss(id, err instanceof UntrustedShareError ? this.#missTtlMs : this.#errorTtlMs);
          throw err;
        },
      );
      this.#inflight.set(id, pending);
      void pending.finally(() => this.#inflight.delete(id)).catch(() => undefined);
    }
    return pending;
  }

  async #getFresh(roomId: string, epoch: number): Promise<Uint8Array | undefined> {
    const reply = await this.#fetch(roomId, epoch);
    if (reply === undefined) return undefined;
    const key = await this.#verifyAndOpen(roomId, epoch, reply);
    await this.#floor.record(roomId, epoch);
    return key;
  }

  #miss(id: string, ttlMs: number): void {
    if (this.#misses.size >= 4096) this.#misses.delete(this.#misses.keys().next().value!);
    this.#misses.set(id, performance.now() + ttlMs);
  }

  /** The highest epoch of `roomId` this keyring (or its store) has verified: it never sends under a lower one. */
  highestEpoch(roomId: string): Promise<number | undefined> {
    return this.#floor.highest(roomId);
  }

  /** The verified members of `epoch` (whose frames a reader accepts); undefined for an epoch not verified here. */
  members(roomId: string, epoch: number): ReadonlySet<string> | undefined {
    return this.#members.get(roomId)?.get(epoch);
  }

  /** Forgets the cached current epoch of `roomId` (e.g. after a rekey notice), so the next `current()` asks. */
  invalidate(roomId: string): void {
    this.#current.delete(roomId);
    // A rekey notice may announce an epoch remembered as a miss.
    for (const id of this.#misses.keys()) if (id.startsWith(`${roomId}/`)) this.#misses.delete(id);
  }

  /** The share, or undefined when the service says the caller has none (not a member, no such epoch, no share). */
  async #fetch(roomId: string, epoch: number | undefined): Promise<KeysGetShareReply | undefined> {
    try {
      return await this.#client.keys.getShare(roomId, epoch);
    } catch (err) {
      if (err instanceof UnibusError && (err.code === ErrorCode.NotFound || err.code === ErrorCode.Forbidden)) return undefined;
      throw err;
    }
  }

  async #verifyAndOpen(roomId: string, epoch: number, reply: KeysGetShareReply): Promise<Uint8Array> {
    const reject = (reason: UntrustedShareReason, cause?: unknown): UntrustedShareError => new UntrustedShareError(roomId, epoch, reason, cause === undefined ? undefined : { cause });
    if (reply.roomId !== roomId || reply.epoch !== epoch) throw reject(UntrustedShareReason.wrongEpoch);
    let sealed: Uint8Array;
    let root: Uint8Array | null;
    try {
      sealed = fromBase64Url(reply.sealedShare);
      root = rootFromProof(shareLeaf(this.#identity.principal, sealed), reply.index, reply.leafCount, reply.proof.map(fromBase64Url));
    } catch (err) {
      throw reject(UntrustedShareReason.badProof, err);
    }
    if (root === null) throw reject(UntrustedShareReason.badProof);
    // Who may distribute and who must receive come from the verified log at
    // the signed position, never from the service (threat: a fake owner in
    // rooms.get, an extra principal in agreement_keys). A log that fails
    // verification throws its own RoomLogError.
    const log = await this.#client.roomLogs.sync(roomId, reply.logSeq);
    const head = log.hashAt(reply.logSeq);
    if (head === undefined || toBase64Url(head) !== reply.logHead) throw reject(UntrustedShareReason.logMismatch);
    const members = log.membersAt(reply.logSeq);
    if (members.get(reply.distributor) !== "owner") throw reject(UntrustedShareReason.distributorNotOwner);
    const recipients = principalsHash([...members.keys()].sort(byteOrder));
    if (toBase64Url(recipients) !== reply.recipientsHash || reply.leafCount !== members.size) throw reject(UntrustedShareReason.recipientsMismatch);
    let signatureOk: boolean;
    try {
      const statement = epochStatementBytes({ roomId, epoch, distributor: reply.distributor, leafCount: reply.leafCount, root, logSeq: reply.logSeq, logHead: head, recipients });
      signatureOk = verifySignature(publicKeyFromPrincipal(reply.distributor), statement, fromBase64Url(reply.signature));
    } catch (err) {
      throw reject(UntrustedShareReason.badSignature, err);
    }
    if (!signatureOk) throw reject(UntrustedShareReason.badSignature);
    let key: Uint8Array;
    try {
      key = openSealed(this.#identity.agreementSecretKey, sealed);
    } catch (err) {
      throw reject(UntrustedShareReason.unopenable, err);
    }
    if (key.byteLength !== ShareSetFormat.roomKeyBytes) throw reject(UntrustedShareReason.unopenable);
    let epochs = this.#keys.get(roomId);
    if (epochs === undefined) {
      epochs = new Map();
      this.#keys.set(roomId, epochs);
    }
    epochs.set(epoch, key);
    let sets = this.#members.get(roomId);
    if (sets === undefined) {
      sets = new Map();
      this.#members.set(roomId, sets);
    }
    sets.set(epoch, new Set(members.keys()));
    return key;
  }
}
