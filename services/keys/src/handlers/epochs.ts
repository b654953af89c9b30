import type { KV } from "@nats-io/kv";
import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import { SealedBox, fromBase64Url, isPrincipal, toBase64Url, verifySignature } from "@unibus/crypto";
import { defineCounter, handles } from "@unibus/kit";
import type { HandlerContext } from "@unibus/kit";
import { ShareSetFormat, epochStatementBytes, merkleRoot, principalsHash, shareLeaf, shareLeafOfDigest } from "@unibus/sdk";
import { activeUser, compareAscii, currentMembers, requireMember, roomRole } from "../access.js";
import type { MembershipView } from "../access.js";
import { epochKey, isRevisionConflict, listKeys, readAgreementKeyRecord, readEpochRecord, unavailable } from "../store/records.js";
import type { EpochRecord, ShareEntry } from "../store/records.js";
import type { AgreementKeyDirectory } from "../store/agreement-directory.js";

/**
 * Largest `epochs.publish` body: ~195 B per member as JSON, so about 5,000
 * members. Below the server's default max_payload (1 MiB) with room for the
 * envelope headers, which count against the same limit.
 */
export const PUBLISH_EPOCH_MAX_BYTES = 1_000_000;

/** Exact length of a sealed 32-byte room key. */
const SEALED_SHARE_BYTES = SealedBox.overhead + ShareSetFormat.roomKeyBytes;

/** What the epoch endpoints work on. */
export interface EpochDeps {
  roomKeys: KV;
  membership: MembershipView;
  /** Read for `pendingShares`: which members without a share have registered a key since. */
  agreementKeys: KV;
  agreementDirectory?: AgreementKeyDirectory;
}

/**
 * Members the epoch lists without a share who are still members and have an
 * agreement key registered now: an owner's client rekeys for them
 * (room-keys.md "Late agreement keys"). The binding is not verified here;
 * the owner verifies it before sealing, so a record the server made up only
 * costs a rekey, never a share.
 */
async function pendingShares(deps: EpochDeps, record: EpochRecord): Promise<string[]> {
  const without = record.shares.filter((s) => s.sealedShare === undefined).map((s) => s.principal);
  if (without.length === 0) return [];
  const members = new Set(await currentMembers(deps.membership, record.roomId));
  const candidates = without.filter((p) => members.has(p));
  if (candidates.length === 0) return [];
  const read = deps.agreementDirectory === undefined ? (ps: readonly string[]) => Promise.all(ps.map((p) => readAgreementKeyRecord(deps.agreementKeys, p))) : await deps.agreementDirectory.reader();
  const records = await read(candidates);
  return candidates.filter((_, i) => records[i] != null);
}

function badRequest(reason: string, message: string, path?: string): UnibusError {
  return new UnibusError(ErrorCode.BadRequest, reason === "schema_violation" ? ErrorReason.SchemaViolation : reason, message, path === undefined ? {} : { details: { path } });
}

/** Paging of `epochs.list` (the schema bounds `limit` at 20,000: ≤ 17 B of JSON per epoch, under half the payload limit). */
export const EpochPage = {
  defaultLimit: 10_000,
} as const;

const EPOCH_CURSOR = /^e([1-9][0-9]{0,15})$/;

/** `e<epoch>`: continue after that epoch. */
function epochCursor(epoch: number): string {
  return `e${epoch}`;
}

/** The epoch a cursor continues after (0 for the first page); 400 `invalid_cursor` for anything this endpoint did not issue. */
function parseEpochCursor(cursor: string | undefined): number {
  if (cursor === undefined) return 0;
  const m = EPOCH_CURSOR.exec(cursor);
  const epoch = m?.[1] === undefined ? NaN : Number(m[1]);
  if (!Number.isSafeInteger(epoch)) throw new UnibusError(ErrorCode.BadRequest, "invalid_cursor", "cursor is not one this endpoint issued");
  return epoch;
}

/** The room's epochs, ascending. */
export async function listEpochs(roomKeys: KV, roomId: string): Promise<number[]> {
  const prefix = `${roomId}.`;
  return (await listKeys(roomKeys, `${roomId}.*`)).map((k) => Number(k.slice(prefix.length))).filter((n) => Number.isSafeInteger(n) && n > 0).sort((a, b) => a - b);
}

/** Leaves of a share set; `decoded` (from {@link checkShares}) spares decoding every share twice. */
export function leavesOf(shares: readonly ShareEntry[], decoded?: readonly (Uint8Array | undefined)[]): Uint8Array[] {
  return shares.map((s, i) =>
    // A share deleted when its member left keeps only its digest (share-redaction.ts), so the tree, and others' proofs, stay the same.
    s.sealedShare === undefined && s.shareDigest !== undefined
      ? shareLeafOfDigest(s.principal, fromBase64Url(s.shareDigest))
      : shareLeaf(s.principal, decoded?.[i] ?? (s.sealedShare === undefined ? undefined : fromBase64Url(s.sealedShare))),
  );
}

/**
 * Checks the share list's form: valid principals, strictly ascending (so
 * unique), well-formed sealed boxes. Returns the decoded shares.
 */
function checkShares(shares: readonly ShareEntry[]): (Uint8Array | undefined)[] {
  let previous = "";
  return shares.map((s, i) => {
    if (!isPrincipal(s.principal)) throw badRequest("schema_violation", "principal is not a valid user nkey", `/shares/${i}/principal`);
    if (compareAscii(s.principal, previous) <= 0) throw badRequest("shares_not_sorted", "shares must be sorted by principal without duplicates", `/shares/${i}/principal`);
    previous = s.principal;
    if (s.sealedShare === undefined) return undefined;
    const sealed = fromBase64Url(s.sealedShare);
    if (sealed.byteLength !== SEALED_SHARE_BYTES) {
      throw badRequest("invalid_sealed_share", `a sealed share must be ${SEALED_SHARE_BYTES} bytes`, `/shares/${i}/sealedShare`);
    }
    return sealed;
  });
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** A read started early: its failure is held (never an unhandled rejection) until it is awaited. */
function settle<T>(p: Promise<T>): Promise<Settled<T>> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

function unwrap<T>(s: Settled<T>): T {
  if (!s.ok) throw s.error;
  return s.value;
}

/** Room-key epochs stored: each one is a rekey of its room. */
const rekeys = defineCounter("unibus_rekeys_total", "Room-key epochs published (rekeys)");

/** `epochs.publish` and `epochs.list`. */
export function epochHandlers(deps: EpochDeps) {
  const { roomKeys, membership } = deps;
  const iso = (ctx: HandlerContext): string => new Date(ctx.now()).toISOString();

  return {
    publish: handles("keys", "epochs.publish", {
      maxPayloadBytes: PUBLISH_EPOCH_MAX_BYTES,
      async handler(req, caller, ctx) {
        const user = activeUser(caller);
        // Only owners (and active admins) may start an epoch: a member that
        // could would hand out a key of its choosing, e.g. to keep reading
        // after it is removed.
        const role = await roomRole(membership, req.roomId, user.principal);
        if (role !== "owner" && user.role !== "admin") throw new UnibusError(ErrorCode.Forbidden, ErrorReason.Forbidden, "only room owners and admins may publish an epoch");
        // The two listings (the room's members, its epochs) are started now
        // and awaited after the CPU-bound checks, so their round trips overlap
        // the Merkle root and signature work (P4). Only authorized callers get
        // here, and the checks below still decide in the documented order
        // (room-keys.md "Service checks"); nothing is stored before all pass.
        // Both reads start after the request arrived, so they are at least as
        // fresh as reads made one after the other.
        const membersRead = settle(currentMembers(membership, req.roomId));
        const epochsRead = settle(listEpochs(roomKeys, req.roomId));
        const shares: ShareEntry[] = req.shares;
        const sealed = checkShares(shares);
        const root = merkleRoot(leavesOf(shares, sealed));
        const recipients = principalsHash(shares.map((s) => s.principal));
        const statement = epochStatementBytes({ roomId: req.roomId, epoch: req.epoch, distributor: user.principal, leafCount: shares.length, root, logSeq: req.logSeq, logHead: fromBase64Url(req.logHead), recipients });
        const signed = verifySignature(user.publicKey, statement, fromBase64Url(req.signature));
        const members = unwrap(await membersRead);
        if (members.length === 0) throw new UnibusError(ErrorCode.NotFound, "room_not_found", "no such room");
        // The set must be the membership exactly: a missing member is a
        // denial of service, an extra one (a removed member) a leak.
        if (members.length !== shares.length || members.some((p, i) => shares[i]!.principal !== p)) {
          throw new UnibusError(ErrorCode.Conflict, "member_set_mismatch", "the share set does not match the room's current members; re-read and retry");
        }
        if (!signed) throw badRequest("invalid_epoch_signature", "the share set is not signed by the caller");
        const epochs = unwrap(await epochsRead);
        const current = epochs.at(-1) ?? 0;
        const conflict = (): UnibusError =>
          new UnibusError(ErrorCode.Conflict, "epoch_conflict", `epoch must be the current epoch + 1; another rekey may have won`);
        if (req.epoch !== current + 1) throw conflict();
        const record: EpochRecord = { roomId: req.roomId, epoch: req.epoch, distributor: user.principal, signature: req.signature, shares, createdAt: iso(ctx), logSeq: req.logSeq, logHead: req.logHead };
        let revision: number;
        try {
          // create = compare-and-set on "absent": of two concurrent rekeys to
          // the same epoch exactly one is stored, the other gets 409.
          revision = await roomKeys.create(epochKey(req.roomId, req.epoch), JSON.stringify(record));
        } catch (err) {
          if (isRevisionConflict(err)) throw conflict();
          throw unavailable(err);
        }
        ctx.logger.info({ room: req.roomId, epoch: req.epoch, shares: shares.length, revision }, "epoch published");
        rekeys.inc();
        return { roomId: req.roomId, epoch: req.epoch, shares: shares.length, revision };
      },
    }),
    list: handles("keys", "epochs.list", {
      async handler(req, caller) {
        const user = activeUser(caller);
        const role = await requireMember(membership, req.roomId, user.principal);
        const after = parseEpochCursor(req.cursor);
        const all = await listEpochs(roomKeys, req.roomId);
        // Epochs are only ever added, each above the last, so paging by
        // number lists each once and a new one shows up on a later page.
        const rest = all.filter((e) => e > after);
        const epochs = rest.slice(0, req.limit ?? EpochPage.defaultLimit);
        const next = epochs.length < rest.length ? { next_cursor: epochCursor(epochs.at(-1)!) } : {};
        const last = all.at(-1);
        const record = last === undefined ? null : await readEpochRecord(roomKeys, epochKey(req.roomId, last));
        if (record === null) return { roomId: req.roomId, epochs, ...next };
        const current = { epoch: record.epoch, distributor: record.distributor, createdAt: record.createdAt, principalsHash: toBase64Url(principalsHash(record.shares.map((s) => s.principal))) };
        // Only owners act on it (they alone may start an epoch); other members
        // have no use for who is still waiting.
        if (role !== "owner") return { roomId: req.roomId, epochs, current, ...next };
        return { roomId: req.roomId, epochs, current: { ...current, pendingShares: await pendingShares(deps, record) }, ...next };
      },
    }),
  };
}
