import { ErrorCode, UnibusError, roomKeysNoticeSubject, roomMembershipSubject } from "@unibus/contracts";
import { fromBase64Url, publicKeyFromPrincipal, randomBytes, sealToVerified, toBase64Url, verifySignature, warmCryptoPool } from "@unibus/crypto";
import type { BoundRecipient, SigningKey } from "@unibus/crypto";
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

function byteOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The agreement key of a member, or undefined if it registered none or its
 * binding is not its own signature (a key the server substituted would let
 * it open this member's share). A binding checked before costs a lookup:
 * the crypto library remembers the statements that verified.
 */
function verifiedAgreementKey(m: { principal: string; agreementKey?: string; signature?: string }): Uint8Array | undefined {
  if (m.agreementKey === undefined || m.signature === undefined) return undefined;
  try {
    const key = fromBase64Url(m.agreementKey);
    return verifySignature(publicKeyFromPrincipal(m.principal), agreementKeyStatementBytes(m.principal, key), fromBase64Url(m.signature)) ? key : undefined;
  } catch {
    return undefined;
  }
}

/** The room's agreement keys as sealed boxes of `roomKey`, by principal: the box and the binding's key (base64url). */
type SealedShares = Map<string, { agreementKey: string; sealed: Uint8Array }>;

/**
 * Seals `roomKey` to every binding in `members` that verifies
 * (sealToVerified checks each binding in the same step that seals to its
 * key, on the crypto pool), reusing `prepared` boxes sealed to the very same
 * key under a binding this process already verified. The caller picks the
 * recipients afterwards from the verified log: a box for a principal the
 * log does not hold is dropped unsent, so sealing before the log is known
 * lets the pool's checks and agreements overlap the log's sync without
 * letting the keys service add a recipient.
 */
async function sealBindings(members: readonly AgreementKeyBinding[], roomKey: Uint8Array, prepared: PreparedEpoch | undefined, helpAfter: Promise<unknown>): Promise<SealedShares> {
  const out: SealedShares = new Map();
  const todo: { principal: string; encoded: string; recipient: BoundRecipient }[] = [];
  for (const m of members) {
    if (m.agreementKey === undefined || m.signature === undefined) continue;
    // A prepared box exists only where its binding verified, and was sealed to this very key.
    const early = prepared?.sealed.get(m.principal);
    if (early !== undefined && early.agreementKey === m.agreementKey) {
      out.set(m.principal, early);
      continue;
    }
    try {
      const agreementKey = fromBase64Url(m.agreementKey);
      const binding = { publicKey: publicKeyFromPrincipal(m.principal), data: agreementKeyStatementBytes(m.principal, agreementKey), signature: fromBase64Url(m.signature) };
      todo.push({ principal: m.principal, encoded: m.agreementKey, recipient: { agreementKey, binding } });
    } catch {
      // Malformed: that member gets no share.
    }
  }
  // Once the log is verified, this thread seals whatever the pool has not taken yet.
  const sealed = await sealToVerified(
    todo.map((t) => t.recipient),
    roomKey,
    { helpAfter },
  );
  sealed.forEach(({ box }, i) => {
    const t = todo[i]!;
    if (box !== null) out.set(t.principal, { agreementKey: t.encoded, sealed: box });
  });
  return out;
}

/** A room key drawn in advance, sealed to the members known then; its shares have never left this process. */
interface PreparedEpoch {
  roomKey: Uint8Array;
  /** principal → the agreement key sealed to (base64url) and the sealed share. */
  sealed: Map<string, { agreementKey: string; sealed: Uint8Array }>;
}

/** Prepared keys per client and room. A key is taken out BEFORE any of its shares are sent, so it is never used twice. */
const preparedEpochs = new WeakMap<RekeyClient, Map<string, PreparedEpoch>>();

/**
 * Draws the room key of `roomId`'s next epoch now and seals it to the
 * current members' verified agreement keys, so the next {@link rekeyRoom}
 * (after a removal, typically) only signs and publishes: sealing is most of
 * a large room's rekey. The key stays in this process until a rekey takes
 * it; a rekey never reuses a key whose shares were already sent (a failed
 * publish may have carried a share for a member removed meanwhile).
 */
export async function prepareNextEpoch(client: RekeyClient, roomId: string): Promise<void> {
  const roomKey = randomBytes(ShareSetFormat.roomKeyBytes);
  let sealed: SealedShares;
  try {
    // Sealed on the crypto pool while the log syncs; only the log's members keep their box.
    const synced = client.roomLogs.sync(roomId);
    const [shares, log] = await Promise.all([client.keys.agreementKeys(roomId).then((ak) => sealBindings(ak.members, roomKey, undefined, synced)), synced]);
    sealed = new Map([...shares].filter(([principal]) => log.members.has(principal)));
  } catch (err) {
    roomKey.fill(0);
    throw err;
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
  // A client with no verified log of the room must check all of it and
  // every binding: the pool's threads (tens of ms to start) start now, so
  // they seal while the log's pages are fetched instead of starting as the
  // pages arrive and leaving the sealing until after the log. A client that
  // synced the room first (autoRekey, prepareRoomKeys) starts nothing here:
  // a small room's rekey must not pay for threads it never uses.
  if (client.roomLogs.cached(roomId) === undefined) void warmCryptoPool();
  let lastError: unknown;
  for (let round = 0; round < REKEY_ROUNDS; round++) {
    // Taken out before anything is sent: whatever happens to this publish, the key is never offered again.
    const prepared = takePrepared(client, roomId);
    const roomKey = prepared?.roomKey ?? randomBytes(ShareSetFormat.roomKeyBytes);
    // The bindings are checked and sealed to on the crypto pool while the
    // log syncs here: both are thousands of signature checks in a cold
    // rekey of a large room. Only the log's members get a box (below).
    const synced = client.roomLogs.sync(roomId);
    const sealing = client.keys.agreementKeys(roomId).then((ak) => sealBindings(ak.members, roomKey, prepared, synced).then((boxes) => ({ members: ak.members, boxes })));
    let epochs: number[];
    let members: KeysAgreementKeysReply["members"];
    let boxes: SealedShares;
    let log: VerifiedRoomLog;
    try {
      [{ epochs }, { members, boxes }, log] = await Promise.all([client.keys.epochs(roomId), sealing, synced]);
    } finally {
      // Once every box is made (or the round failed), the key exists only inside them.
      void sealing.then(
        () => roomKey.fill(0),
        () => roomKey.fill(0),
      );
    }
    // Members verify the distributor was an owner at the signed position; a set they would reject is not worth publishing.
    if (log.members.get(client.principal) !== "owner") throw new UnibusError(ErrorCode.Forbidden, "not_owner_in_log", "only an owner per the room's verified membership log may rekey");
    const epoch = (epochs.at(-1) ?? 0) + 1;
    const sorted = recipientsOf(log, members);
    const logSeq = log.headSeq;
    const logHead = log.headHash;
    const shares = sorted.map((m) => ({ principal: m.principal, sealed: boxes.get(m.principal)?.sealed }));
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
