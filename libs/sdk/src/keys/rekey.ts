import { ErrorCode, UnibusError, roomKeysNoticeSubject, roomMembershipSubject } from "@unibus/contracts";
import { fromBase64Url, publicKeyFromPrincipal, randomBytes, sealToMany, toBase64Url, verifyMany, verifySignature } from "@unibus/crypto";
import type { SignatureCheck } from "@unibus/crypto";
import type { SigningKey } from "@unibus/crypto";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { KeysAgreementKeysReply, KeysPublishEpochRequest } from "@unibus/contracts";
import type { KeysApi } from "./api.js";
import type { KeysServiceKeyring } from "./keyring.js";
import { NoRoomKeyError } from "../rooms/keyring.js";
import type { RoomLogs, VerifiedRoomLog } from "../rooms/membership-log.js";
import type { RoomEpochKey } from "../rooms/keyring.js";
import { ShareSetFormat, agreementKeyStatementBytes, epochStatementBytes, merkleRoot, principalsHash, shareLeaf } from "./share-set.js";

/** What a rekey needs from a client: its principal, keys API and verified membership logs. */
export interface RekeyClient {
  readonly principal: string;
  readonly keys: KeysApi;
  /** Recipients come from here, never from the keys service's member list. */
  readonly roomLogs: RoomLogs;
}

type AgreementKeyBinding = KeysAgreementKeysReply["members"][number];

/**
 * The recipients of a new epoch: exactly the verified log's members, sorted,
 * each with the agreement-key binding the keys service gave for it (if any).
 * A principal the keys service adds gets nothing (threat: a compromised keys
 * service or a rogue replica naming its own identity as a member).
 */
function recipientsOf(log: VerifiedRoomLog, bindings: readonly AgreementKeyBinding[]): AgreementKeyBinding[] {
  const byPrincipal = new Map(bindings.map((b) => [b.principal, b]));
  return [...log.members.keys()].sort(byteOrder).map((principal) => {
    const b = byPrincipal.get(principal);
    return b === undefined ? { principal } : b;
  });
}

/** Outcome of {@link rekeyRoom}. */
export interface RekeyResult {
  /** The room's newest epoch afterwards. */
  epoch: number;
  /** True if this call's share set was stored; false if a concurrent rekey for the same membership won. */
  published: boolean;
  /** Members that got no share (no verified agreement key). */
  withoutShare: string[];
}

/** Rounds before a rekey gives up: each lost round means the membership or epoch moved meanwhile. */
const REKEY_ROUNDS = 5;

/** Agreement-key bindings already verified, by `principal|key|signature`; verification is the dominant per-member cost. */
const verifiedBindings = new Set<string>();

function byteOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The agreement key of a member, or undefined if it registered none or its binding is not its own signature. */
function verifiedAgreementKey(m: { principal: string; agreementKey?: string; signature?: string }): Uint8Array | undefined {
  if (m.agreementKey === undefined || m.signature === undefined) return undefined;
  const id = `${m.principal}|${m.agreementKey}|${m.signature}`;
  try {
    const key = fromBase64Url(m.agreementKey);
    if (verifiedBindings.has(id)) return key;
    // A key the server substituted would let it open this member's share.
    if (!verifySignature(publicKeyFromPrincipal(m.principal), agreementKeyStatementBytes(m.principal, key), fromBase64Url(m.signature))) return undefined;
    verifiedBindings.add(id);
    return key;
  } catch {
    return undefined;
  }
}

/**
 * Verifies the bindings not verified yet in one batch (the worker pool), so
 * a cold rekey's 1,000 binding checks run on every core and alongside the
 * membership log's sync. Successes are recorded as {@link verifiedAgreementKey}
 * records its own; a binding that fails here gets no share there either.
 */
async function verifyBindings(members: readonly AgreementKeyBinding[]): Promise<void> {
  const checks: SignatureCheck[] = [];
  const ids: string[] = [];
  for (const m of members) {
    if (m.agreementKey === undefined || m.signature === undefined) continue;
    const id = `${m.principal}|${m.agreementKey}|${m.signature}`;
    if (verifiedBindings.has(id)) continue;
    try {
      checks.push({ publicKey: publicKeyFromPrincipal(m.principal), data: agreementKeyStatementBytes(m.principal, fromBase64Url(m.agreementKey)), signature: fromBase64Url(m.signature) });
      ids.push(id);
    } catch {
      // Malformed: verifiedAgreementKey refuses it.
    }
  }
  const ok = await verifyMany(checks);
  ok.forEach((good, i) => {
    if (good) verifiedBindings.add(ids[i]!);
  });
}

/** The room's agreement-key bindings, verified (in a batch) on arrival. */
async function verifiedBindingsOf(client: RekeyClient, roomId: string): Promise<KeysAgreementKeysReply> {
  const reply = await client.keys.agreementKeys(roomId);
  await verifyBindings(reply.members);
  return reply;
}

/** A room key drawn in advance, sealed to the members known then; its shares have never left this process. */
interface PreparedEpoch {
  roomKey: Uint8Array;
  /** principal → the agreement key sealed to (base64url) and the sealed share. */
  sealed: Map<string, { agreementKey: string; sealed: Uint8Array }>;
}

/** Prepared keys per client and room. A key is taken out BEFORE any of its shares are sent, so it is never used twice. */
const preparedEpochs = new WeakMap<RekeyClient, Map<string, PreparedEpoch>>();

/** Seals in slices, yielding between them, so preparing a 1,000-member epoch does not stall the event loop. */
const PREPARE_SLICE = 64;

/**
 * Draws the room key of `roomId`'s next epoch now and seals it to the
 * current members' verified agreement keys, so the next {@link rekeyRoom}
 * (after a removal, typically) only signs and publishes: sealing is most of
 * a large room's rekey. The key stays in this process until a rekey takes
 * it; a rekey never reuses a key whose shares were already sent (a failed
 * publish may have carried a share for a member removed meanwhile).
 */
export async function prepareNextEpoch(client: RekeyClient, roomId: string): Promise<void> {
  const [ak, log] = await Promise.all([verifiedBindingsOf(client, roomId), client.roomLogs.sync(roomId)]);
  const members = recipientsOf(log, ak.members);
  const roomKey = randomBytes(ShareSetFormat.roomKeyBytes);
  const sealed: PreparedEpoch["sealed"] = new Map();
  for (let i = 0; i < members.length; i += PREPARE_SLICE) {
    const slice = members.slice(i, i + PREPARE_SLICE).flatMap((m) => {
      const agreementKey = verifiedAgreementKey(m);
      return agreementKey === undefined ? [] : [{ principal: m.principal, encoded: m.agreementKey!, agreementKey }];
    });
    // One ephemeral per slice, all for this one room key (sealed-box.md "Many recipients").
    const boxes = sealToMany(
      slice.map((m) => m.agreementKey),
      roomKey,
    );
    slice.forEach((m, j) => {
      const box = boxes[j];
      if (box != null) sealed.set(m.principal, { agreementKey: m.encoded, sealed: box });
    });
    await new Promise((r) => setImmediate(r));
  }
  let rooms = preparedEpochs.get(client);
  if (rooms === undefined) {
    rooms = new Map();
    preparedEpochs.set(client, rooms);
  }
  rooms.get(roomId)?.roomKey.fill(0);
  rooms.set(roomId, { roomKey, sealed });
}

/** Takes (and forgets) the prepared epoch of `roomId`, if any. */
function takePrepared(client: RekeyClient, roomId: string): PreparedEpoch | undefined {
  const rooms = preparedEpochs.get(client);
  const prepared = rooms?.get(roomId);
  rooms?.delete(roomId);
  return prepared;
}

/**
 * Starts a new epoch of `roomId`: a fresh random 32-byte room key, sealed to
 * every current member's verified agreement key, the whole set signed once,
 * published with compare-and-set on the epoch number. On a lost race (409)
 * it reads the winner: if the winner covers the same members it is done,
 * otherwise it tries again with the new membership. Only owners and admins
 * may publish (403 otherwise).
 */
export async function rekeyRoom(client: RekeyClient, signingKey: SigningKey, roomId: string): Promise<RekeyResult> {
  if (signingKey.principal !== client.principal) throw new TypeError("rekeyRoom: signing key is not the client's");
  let lastError: unknown;
  for (let round = 0; round < REKEY_ROUNDS; round++) {
    // The bindings are verified while the log syncs: both are thousands of signature checks in a cold rekey of a large room.
    const [{ epochs }, { members }, log] = await Promise.all([client.keys.epochs(roomId), verifiedBindingsOf(client, roomId), client.roomLogs.sync(roomId)]);
    // Members verify the distributor was an owner at the signed position; a set they would reject is not worth sealing.
    if (log.members.get(client.principal) !== "owner") throw new UnibusError(ErrorCode.Forbidden, "not_owner_in_log", "only an owner per the room's verified membership log may rekey");
    const epoch = (epochs.at(-1) ?? 0) + 1;
    const sorted = recipientsOf(log, members);
    const logSeq = log.headSeq;
    const logHead = log.headHash;
    // Taken out before anything is sent: whatever happens to this publish, the key is never offered again.
    const prepared = takePrepared(client, roomId);
    const roomKey = prepared?.roomKey ?? randomBytes(ShareSetFormat.roomKeyBytes);
    const shares: { principal: string; sealed: Uint8Array | undefined }[] = sorted.map((m) => {
      const early = prepared?.sealed.get(m.principal);
      // A prepared share is reused only for the very key it was sealed to (and that key's binding still verifies).
      return { principal: m.principal, sealed: early !== undefined && early.agreementKey === m.agreementKey && verifiedAgreementKey(m) !== undefined ? early.sealed : undefined };
    });
    // Everyone else: ONE ephemeral key for this epoch's room key, one box per
    // verified agreement key (sealed-box.md "Many recipients").
    const toSeal: { index: number; agreementKey: Uint8Array }[] = [];
    sorted.forEach((m, index) => {
      if (shares[index]!.sealed !== undefined) return;
      const agreementKey = verifiedAgreementKey(m);
      if (agreementKey !== undefined) toSeal.push({ index, agreementKey });
    });
    sealToMany(
      toSeal.map((t) => t.agreementKey),
      roomKey,
    ).forEach((box, j) => {
      if (box !== null) shares[toSeal[j]!.index]!.sealed = box;
    });
    roomKey.fill(0);
    const withoutShare = shares.filter((s) => s.sealed === undefined).map((s) => s.principal);
    const root = merkleRoot(shares.map((s) => shareLeaf(s.principal, s.sealed)));
    const recipients = principalsHash(sorted.map((m) => m.principal));
    const signature = signingKey.sign(epochStatementBytes({ roomId, epoch, distributor: client.principal, leafCount: shares.length, root, logSeq, logHead, recipients }));
    try {
      await client.keys.publishEpoch({
        roomId,
        epoch,
        shares: shares.map((s) => (s.sealed === undefined ? { principal: s.principal } : { principal: s.principal, sealedShare: toBase64Url(s.sealed) })) as KeysPublishEpochRequest["shares"],
        signature: toBase64Url(signature),
        logSeq,
        logHead: toBase64Url(logHead),
      });
      return { epoch, published: true, withoutShare };
    } catch (err) {
      if (!(err instanceof UnibusError) || err.code !== ErrorCode.Conflict) throw err;
      lastError = err;
      const after = await client.keys.epochs(roomId);
      const wanted = toBase64Url(recipients);
      if (after.current !== undefined && after.current.epoch >= epoch && after.current.principalsHash === wanted) {
        return { epoch: after.current.epoch, published: false, withoutShare };
      }
    }
  }
  throw new UnibusError(ErrorCode.Unavailable, "rekey_contended", "the room's epoch or membership kept changing; rekey again later", { cause: lastError });
}

/** Options of {@link autoRekey}. */
export interface AutoRekeyOptions {
  /** Upper bound of the random delay before reacting to a membership change, so several owners do not all rekey at once. Default 500 ms. */
  jitterMs?: number;
  /** The same bound for a member's "share wanted" notice: shorter, the member is waiting (target: key within 1 s). Default 100 ms. */
  noticeJitterMs?: number;
  /**
   * Check at once and after every reconnect, not only on events: catches
   * invites and late agreement keys from while this owner was offline. Default false.
   */
  checkOnStart?: boolean;
  /** Called with the outcome of each rekey attempt (errors included); for logs and tests. */
  onRekey?: (outcome: RekeyResult | Error) => void;
  /** Called after each check that found the newest epoch up to date (nothing to do); for tests. */
  onUpToDate?: () => void;
}

/** A running {@link autoRekey}. */
export interface AutoRekey {
  /** Stops listening; a rekey already under way completes. */
  stop(): void;
}

/** What auto-rekey needs from a client. */
export interface AutoRekeyClient extends RekeyClient {
  readonly nc: NatsConnection;
}

/** Room-key notices on `unibus.room.<roomId>.ctl.keys` (hints only, never trusted). */
export const RoomKeyNotice = {
  /** A member holds no key of the newest epoch and waits for one. */
  shareWanted: "share_wanted",
  /** An owner published a new epoch. */
  epoch: "epoch",
} as const;
/** One of the {@link RoomKeyNotice} kinds. */
export type RoomKeyNotice = (typeof RoomKeyNotice)[keyof typeof RoomKeyNotice];

const noticeCodec = new TextEncoder();
const noticeDecoder = new TextDecoder();

/** The kind of a notice, or undefined for anything else (a notice is a hint: garbage is ignored). */
function noticeKind(data: Uint8Array): RoomKeyNotice | undefined {
  try {
    const kind = (JSON.parse(noticeDecoder.decode(data)) as { kind?: unknown }).kind;
    return kind === RoomKeyNotice.shareWanted || kind === RoomKeyNotice.epoch ? kind : undefined;
  } catch {
    return undefined;
  }
}

function publishNotice(nc: NatsConnection, roomId: string, body: Record<string, unknown>): void {
  try {
    nc.publish(roomKeysNoticeSubject(roomId), noticeCodec.encode(JSON.stringify(body)));
  } catch {
    // A closed connection: the notice is a hint, the periodic retry covers it.
  }
}

/**
 * True when the newest epoch is out of date: its members differ from the
 * room's, or it lists without a share a member whose agreement key now
 * verifies. A pending member counts only if its binding verifies here: a
 * server naming members with made-up keys must not make owners rekey
 * forever (and a rekey would not seal to such a key anyway).
 */
export function rekeyNeeded(
  current: { principalsHash: string; pendingShares?: readonly string[] } | undefined,
  members: readonly { principal: string; agreementKey?: string; signature?: string }[],
): boolean {
  const now = toBase64Url(principalsHash(members.map((m) => m.principal).sort(byteOrder)));
  if (current?.principalsHash !== now) return true;
  const pending = new Set(current.pendingShares ?? []);
  return members.some((m) => pending.has(m.principal) && verifiedAgreementKey(m) !== undefined);
}

/** Tells members waiting for a key (see {@link waitForRoomKey}) that `epoch` was published; a hint, they still fetch and verify their share. */
export function announceEpoch(nc: NatsConnection, roomId: string, epoch: number): void {
  publishNotice(nc, roomId, { kind: RoomKeyNotice.epoch, epoch });
}

/**
 * Rekeys `roomId` when this client is an owner and either the members
 * changed (the membership service announces it on
 * `unibus.room.<roomId>.membership`) or a member listed without a share in
 * the newest epoch has registered an agreement key since (its client asks on
 * `unibus.room.<roomId>.ctl.keys`; the keys service names such members to
 * owners in `epochs().current.pendingShares`). Events are hints (any member
 * can publish there): each one only makes the owner re-read the keys
 * service and rekey if the newest epoch is out of date, so a forged event
 * costs a check, never a wrong key. Late members get a NEW epoch, never the
 * current one re-sealed: the newest epoch may predate their invite only if
 * no owner was online at the invite, and a fresh epoch cannot leak earlier
 * history. After a rekey it announces the epoch so waiting members fetch
 * their share at once. Events during a run coalesce into one more check.
 */
export function autoRekey(client: AutoRekeyClient, signingKey: SigningKey, roomId: string, opts: AutoRekeyOptions = {}): AutoRekey {
  const jitterMs = opts.jitterMs ?? 500;
  const noticeJitterMs = opts.noticeJitterMs ?? 100;
  let running = false;
  let again = false;
  let againJitter = jitterMs;
  let stopped = false;
  const check = async (): Promise<void> => {
    // Ownership and members per the verified log, not per rooms.get (an unsigned reply).
    const log = await client.roomLogs.sync(roomId);
    if (log.members.get(client.principal) !== "owner") return;
    const [{ current }, ak] = await Promise.all([client.keys.epochs(roomId), client.keys.agreementKeys(roomId)]);
    if (!rekeyNeeded(current, recipientsOf(log, ak.members))) {
      opts.onUpToDate?.();
      return;
    }
    const outcome = await rekeyRoom(client, signingKey, roomId);
    announceEpoch(client.nc, roomId, outcome.epoch);
    opts.onRekey?.(outcome);
    // The next change (a removal, most urgently) then only signs and publishes.
    await prepareNextEpoch(client, roomId);
  };
  const run = async (delayMs: number): Promise<void> => {
    if (running) {
      againJitter = again ? Math.min(againJitter, delayMs) : delayMs;
      again = true;
      return;
    }
    running = true;
    let wait = delayMs;
    try {
      do {
        again = false;
        await new Promise((r) => setTimeout(r, Math.random() * wait));
        if (stopped) return;
        await check().catch((err: unknown) => opts.onRekey?.(err instanceof Error ? err : new Error(String(err))));
        wait = againJitter;
      } while (again && !stopped);
    } finally {
      running = false;
    }
  };
  const subs: Subscription[] = [
    client.nc.subscribe(roomMembershipSubject(roomId), { callback: () => void run(jitterMs) }),
    client.nc.subscribe(roomKeysNoticeSubject(roomId), {
      callback: (_err, msg) => {
        if (noticeKind(msg.data) === RoomKeyNotice.shareWanted) void run(noticeJitterMs);
      },
    }),
  ];
  let statusStop: (() => void) | undefined;
  if (opts.checkOnStart === true) {
    void run(0);
    const status = client.nc.status();
    statusStop = () => (status as unknown as { stop?: () => void }).stop?.();
    void (async () => {
      for await (const s of status) {
        if (stopped) break;
        if (s.type === "reconnect") void run(noticeJitterMs);
      }
    })().catch(() => undefined);
  }
  return {
    stop() {
      stopped = true;
      for (const sub of subs) sub.unsubscribe();
      statusStop?.();
    },
  };
}

/** Options of {@link waitForRoomKey}. */
export interface WaitForRoomKeyOptions {
  /** Called once when the first attempt finds no key, before waiting (e.g. to tell the user). */
  onWaiting?: () => void;
  /** First interval between asks when no notice arrives; doubles up to {@link maxRetryMs}. Default 1000 ms. */
  retryMs?: number;
  /** Largest interval between asks. Default 5000 ms. */
  maxRetryMs?: number;
  /** Stops waiting (rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** What {@link waitForRoomKey} needs from a client. */
export interface RoomKeyWaitClient {
  readonly principal: string;
  readonly nc: NatsConnection;
}

/**
 * Resolves with the newest epoch's key once `keyring` holds it. While it
 * holds none (a member whose agreement key was registered after the newest
 * epoch), it asks the room's owners for a share on
 * `unibus.room.<roomId>.ctl.keys`, then waits for an owner's epoch notice or
 * the retry interval and asks the keys service again. The notice carries no
 * key: the share still comes from the keys service and passes every check of
 * the keyring.
 */
export async function waitForRoomKey(client: RoomKeyWaitClient, keyring: KeysServiceKeyring, roomId: string, opts: WaitForRoomKeyOptions = {}): Promise<RoomEpochKey> {
  let wake: (() => void) | undefined;
  const sub = client.nc.subscribe(roomKeysNoticeSubject(roomId), {
    callback: (_err, msg) => {
      if (noticeKind(msg.data) === RoomKeyNotice.epoch) wake?.();
    },
  });
  const maxRetryMs = opts.maxRetryMs ?? 5_000;
  let retryMs = opts.retryMs ?? 1_000;
  let told = false;
  try {
    for (;;) {
      opts.signal?.throwIfAborted();
      keyring.invalidate(roomId);
      try {
        return await keyring.current(roomId);
      } catch (err) {
        if (!(err instanceof NoRoomKeyError)) throw err;
      }
      if (!told) {
        told = true;
        opts.onWaiting?.();
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, retryMs);
        function done(): void {
          clearTimeout(timer);
          opts.signal?.removeEventListener("abort", done);
          wake = undefined;
          resolve();
        }
        wake = done;
        opts.signal?.addEventListener("abort", done);
        // Asked only once listening, so an owner's immediate answer is not missed.
        publishNotice(client.nc, roomId, { kind: RoomKeyNotice.shareWanted, principal: client.principal });
      });
      retryMs = Math.min(retryMs * 2, maxRetryMs);
    }
  } finally {
    sub.unsubscribe();
  }
}
