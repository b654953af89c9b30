/**
 * What the room logs and the users log share: a hash chain of actors' own
 * signed requests, verified link by link and synced page by page from a
 * service that is not trusted (threat: a compromised service that forks,
 * rewinds, truncates or rewrites a log to change who may do what). Each log
 * keeps its own rules (who may do what at which position); the link checks,
 * the incremental sync and the pinned-head check are the same for both and
 * live here once.
 */
import type { UnibusError } from "@unibus/contracts";
import { envelopeCheck, fromBase64Url, helpCryptoPoolUntil, sha256, toBase64Url, verifyEnvelope, verifyMany } from "@unibus/crypto";
import type { SignatureCheck, SigningKey } from "@unibus/crypto";

/** The reasons the shared checks raise (each log's error reasons include these). */
export const ChainErrorReason = {
  /** An entry is malformed or its server-assigned fields disagree with the signed request. */
  badEntry: "log_bad_entry",
  /** An actor's envelope signature does not verify. */
  badSignature: "log_bad_signature",
  /** The actor was not allowed to do this at that point of the log. */
  unauthorized: "log_unauthorized",
  /** A signed request appears twice (a replayed invite, say). */
  replayed: "log_replayed",
  /** An entry's sequence is not the next one, or the log ends before a position that must exist. */
  gap: "log_gap",
  /** An entry does not chain to the verified entry before it, or a verified entry changed. */
  fork: "log_fork",
  /** The service now shows a shorter log than one already verified. */
  rollback: "log_rollback",
  /** The log does not exist (no first entry). */
  missing: "log_missing",
} as const;
/** One of the {@link ChainErrorReason} values. */
export type ChainErrorReason = (typeof ChainErrorReason)[keyof typeof ChainErrorReason];

/** Builds the log's own error type for a failed check. */
export type ChainFail = (reason: ChainErrorReason, message: string, seq?: number) => UnibusError;

/** The fields every entry of a signed chain has. */
export interface SignedChainEntry {
  readonly seq: number;
  /** Hash of the entry before it, base64url (32 zero bytes for entry 0). */
  readonly prev: string;
  readonly op: string;
  /** The subject the actor signed the request for. */
  readonly subject: string;
  /** The request body exactly as signed, base64url. */
  readonly body: string;
  readonly signer: string;
  readonly timestamp: number;
  readonly nonce: string;
  readonly signature: string;
}

/** A log as far as verified: what the shared checks and the sync need of it. */
export interface VerifiedChain<E> {
  readonly length: number;
  readonly headSeq: number;
  readonly headHash: Uint8Array;
  hashAt(seq: number): Uint8Array | undefined;
  /** Verifies and applies entries in order; throws on the first bad one. */
  append(entries: readonly E[]): void;
}

const seenKey = (e: SignedChainEntry): string => `${e.signer}.${e.nonce}`;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The signed request's JSON object; throws on anything else (the caller maps it to a bad entry). */
export function readSignedBody(body: Uint8Array): Record<string, unknown> {
  const req = JSON.parse(decoder.decode(body)) as unknown;
  if (typeof req !== "object" || req === null || Array.isArray(req)) throw new TypeError("body is not an object");
  return req as Record<string, unknown>;
}

/** Concatenates byte arrays. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let size = 0;
  for (const p of parts) size += p.byteLength;
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/**
 * A u32 BE length-prefixed byte field, so no two field lists encode alike.
 * One allocation per field (a log entry's hash takes a dozen of them, and a
 * cold sync hashes every entry).
 */
export function field(b: Uint8Array | string): Uint8Array {
  let out: Uint8Array;
  let len: number;
  if (typeof b === "string") {
    // UTF-8 takes at most 3 bytes per UTF-16 unit; the unused tail is cut off below.
    out = new Uint8Array(4 + 3 * b.length);
    len = encoder.encodeInto(b, out.subarray(4)).written;
    out = out.subarray(0, 4 + len);
  } else {
    len = b.byteLength;
    out = new Uint8Array(4 + len);
    out.set(b, 4);
  }
  out[0] = len >>> 24;
  out[1] = (len >>> 16) & 0xff;
  out[2] = (len >>> 8) & 0xff;
  out[3] = len & 0xff;
  return out;
}

/** A u64 BE integer field. */
export function u64(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("expected a non-negative safe integer");
  const out = new Uint8Array(8);
  const high = Math.floor(n / 2 ** 32);
  const low = n >>> 0;
  out[0] = high >>> 24;
  out[1] = (high >>> 16) & 0xff;
  out[2] = (high >>> 8) & 0xff;
  out[3] = high & 0xff;
  out[4] = low >>> 24;
  out[5] = (low >>> 16) & 0xff;
  out[6] = (low >>> 8) & 0xff;
  out[7] = low & 0xff;
  return out;
}

/** The envelope fields of a signed request, as a link keeps them. */
export interface SignedLinkEnvelope {
  readonly signer: string;
  readonly timestamp: number;
  readonly nonce: string;
  readonly signature: string;
}

/** The signed-request fields of a new link, in their stored order. */
export function signedLink<Op extends string, S extends string>(op: Op, subject: S, body: Uint8Array, envelope: SignedLinkEnvelope) {
  return { op, subject, body: toBase64Url(body), signer: envelope.signer, timestamp: envelope.timestamp, nonce: envelope.nonce, signature: envelope.signature };
}

/**
 * SHA-256 over fields laid out exactly as {@link field}, {@link u64} and
 * raw bytes concatenated would lay them out, written into one scratch
 * buffer: a cold sync hashes every entry, and a dozen small arrays plus
 * their concatenation per entry cost more than the hash itself. The
 * scratch holds only public log data and is used synchronously, never
 * across an await.
 */
export class FieldHasher {
  static #scratch = new Uint8Array(2048);
  #at = 0;

  #room(n: number): void {
    if (this.#at + n <= FieldHasher.#scratch.byteLength) return;
    const grown = new Uint8Array(Math.max(2 * FieldHasher.#scratch.byteLength, this.#at + n));
    grown.set(FieldHasher.#scratch.subarray(0, this.#at));
    FieldHasher.#scratch = grown;
  }

  /** A u32 BE length-prefixed field, as {@link field}. */
  field(b: Uint8Array | string): this {
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    this.#room(4 + (typeof b === "string" ? 3 * b.length : b.byteLength));
    const buf = FieldHasher.#scratch;
    const at = this.#at;
    let len: number;
    if (typeof b === "string") len = encoder.encodeInto(b, buf.subarray(at + 4)).written;
    else {
      buf.set(b, at + 4);
      len = b.byteLength;
    }
    buf[at] = len >>> 24;
    buf[at + 1] = (len >>> 16) & 0xff;
    buf[at + 2] = (len >>> 8) & 0xff;
    buf[at + 3] = len & 0xff;
    this.#at = at + 4 + len;
    return this;
  }

  /** A u64 BE integer, as {@link u64}. */
  u64(n: number): this {
    return this.raw(u64(n));
  }

  /** Bytes as they are. */
  raw(b: Uint8Array): this {
    this.#room(b.byteLength);
    FieldHasher.#scratch.set(b, this.#at);
    this.#at += b.byteLength;
    return this;
  }

  /** SHA-256 of everything written. */
  digest(): Uint8Array {
    return sha256(FieldHasher.#scratch.subarray(0, this.#at));
  }
}

/** Writes {@link signedLinkHashFields} into `h`, with the body already decoded from `e.body` (a sync has it from the link check). */
export function writeSignedLinkFields(h: FieldHasher, e: SignedChainEntry, body: Uint8Array): FieldHasher {
  return h.field(e.op).field(e.subject).field(body).field(e.signer).u64(e.timestamp).field(e.nonce).field(e.signature);
}

/** The signed-request part of a link's hash input: `field(op) ‖ field(subject) ‖ field(body) ‖ field(signer) ‖ u64(timestamp) ‖ field(nonce) ‖ field(signature)`. */
export function signedLinkHashFields(e: SignedChainEntry): Uint8Array[] {
  return [field(e.op), field(e.subject), field(fromBase64Url(e.body)), field(e.signer), u64(e.timestamp), field(e.nonce), field(e.signature)];
}

/** The `prev` of entry 0: 32 zero bytes. */
export const ZERO_HASH: Uint8Array = new Uint8Array(32);

/**
 * The verified part of a signed chain: entry hashes and the signed requests
 * already used. A log class extends it with its own rules and state.
 */
export abstract class SignedChain<E extends SignedChainEntry> implements VerifiedChain<E> {
  readonly #hashes: Uint8Array[] = [];
  readonly #seen = new Set<string>();

  /** Number of verified entries (the next entry's seq). */
  get length(): number {
    return this.#hashes.length;
  }

  /** Seq of the newest verified entry; -1 when none. */
  get headSeq(): number {
    return this.#hashes.length - 1;
  }

  /** Hash of the newest verified entry (32 zero bytes when none). */
  get headHash(): Uint8Array {
    return this.#hashes.at(-1) ?? ZERO_HASH;
  }

  /** Hash of verified entry `seq`; undefined beyond the verified head. */
  hashAt(seq: number): Uint8Array | undefined {
    return this.#hashes[seq];
  }

  abstract append(entries: readonly E[]): void;

  /** {@link checkSignedLink} against this chain's head; returns the signed body. */
  protected checkLink(e: E, subjectOf: (op: string) => string | undefined, fail: ChainFail): Uint8Array {
    return checkSignedLink(e, { length: this.length, headHash: this.headHash, seen: this.#seen }, subjectOf, fail);
  }

  /** Records a verified entry as the new head. */
  protected recordLink(e: E, hash: Uint8Array): void {
    this.#hashes.push(hash);
    this.#seen.add(seenKey(e));
  }
}

/**
 * The checks every link gets before the log's own rules: it is the next
 * entry, it chains to the verified head, its op was signed for its subject,
 * the actor's envelope verifies and the signed request was not used before.
 * Returns the signed body's bytes for the log's rules to read.
 */
export function checkSignedLink(
  e: SignedChainEntry,
  chain: { readonly length: number; readonly headHash: Uint8Array; readonly seen: ReadonlySet<string> },
  subjectOf: (op: string) => string | undefined,
  fail: ChainFail,
): Uint8Array {
  if (e.seq !== chain.length) throw fail(ChainErrorReason.gap, `expected entry ${chain.length}, got ${e.seq}`, e.seq);
  const pre = preverifiedOf(e);
  let prev: Uint8Array;
  let body: Uint8Array;
  try {
    prev = fromBase64Url(e.prev);
    body = pre?.body ?? fromBase64Url(e.body);
  } catch {
    throw fail(ChainErrorReason.badEntry, "prev or body is not base64url", e.seq);
  }
  if (!sameBytes(prev, chain.headHash)) throw fail(ChainErrorReason.fork, "does not chain to the verified entry before it", e.seq);
  const subject = subjectOf(e.op);
  if (subject === undefined || e.subject !== subject) throw fail(ChainErrorReason.badEntry, `op ${e.op} was not signed for its subject`, e.seq);
  // The batch's answer is verifyEnvelope's for these very fields (see preverifySignatures).
  const signed = pre !== undefined ? pre.ok : verifyEnvelope({ signer: e.signer, timestamp: e.timestamp, nonce: e.nonce, signature: e.signature }, e.subject, body);
  if (!signed) {
    throw fail(ChainErrorReason.badSignature, "the actor's signature does not verify", e.seq);
  }
  // The same signed request twice would let the service re-apply an old
  // change (an invite after a removal, an add after a revoke); every request's nonce is fresh.
  if (chain.seen.has(seenKey(e))) throw fail(ChainErrorReason.replayed, "a signed request appears twice", e.seq);
  return body;
}

/**
 * Equal bytes: an entry's `prev` against the verified head, once per entry
 * of a sync. Compared as bytes, not as two fresh base64url strings (the same
 * answer, as the encoding is one-to-one, without two buffers and strings
 * per entry on the log's sequential path). Public data: no constant time.
 */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * What the batch check of a page found for an entry, with the fields it
 * read: the link check takes the answer only while every one of them is
 * still the very same value, so an entry changed since is checked afresh.
 */
interface Preverified {
  readonly signer: string;
  readonly subject: string;
  readonly timestamp: number;
  readonly nonce: string;
  readonly signature: string;
  readonly bodyText: string;
  /** `fromBase64Url(bodyText)`. */
  readonly body: Uint8Array;
  /** What `verifyEnvelope` answers for these fields: the format checks passed and the signature verified. */
  readonly ok: boolean;
}

/** Batch answers by entry object; dropped with the page. */
const preverified = new WeakMap<SignedChainEntry, Preverified>();

/**
 * Verifies the actors' signatures of a page in one batch (the worker pool,
 * all cores) ahead of the sequential link checks, and keeps each entry's
 * answer, so the link check does not rebuild the envelope bytes and body
 * hash the batch already built. The batch makes exactly the check
 * `verifyEnvelope` makes (`envelopeCheck`: the same format checks, then
 * one signature; true only where a verification said so). An entry that
 * is malformed gets no answer and is left for the link check to refuse.
 * Entries signed by `own` (the reader's key) are checked by signing again.
 */
async function preverifySignatures(entries: readonly SignedChainEntry[], own: SigningKey | undefined): Promise<void> {
  const checked: { e: SignedChainEntry; body: Uint8Array; check: SignatureCheck | undefined }[] = [];
  for (const e of entries) {
    try {
      const body = fromBase64Url(e.body);
      checked.push({ e, body, check: envelopeCheck({ signer: e.signer, timestamp: e.timestamp, nonce: e.nonce, signature: e.signature }, e.subject, body) });
    } catch {
      // Malformed: the link check refuses it with its reason.
    }
  }
  const todo = checked.filter((c) => c.check !== undefined);
  const results = await verifyMany(todo.map((c) => c.check!), { own });
  const ok = new Map(todo.map((c, i) => [c, results[i] === true]));
  for (const c of checked) {
    const { e } = c;
    preverified.set(e, { signer: e.signer, subject: e.subject, timestamp: e.timestamp, nonce: e.nonce, signature: e.signature, bodyText: e.body, body: c.body, ok: ok.get(c) === true });
  }
}

/** The batch's answer for `e`, if its fields are still the ones the batch read. */
function preverifiedOf(e: SignedChainEntry): Preverified | undefined {
  const p = preverified.get(e);
  if (p === undefined) return undefined;
  return p.signer === e.signer && p.subject === e.subject && p.timestamp === e.timestamp && p.nonce === e.nonce && p.signature === e.signature && p.bodyText === e.body ? p : undefined;
}

/** Entries per signature batch of a page (a pool job's worth). */
const PAGE_SLICE = 128;

/** One page of a log as a service serves it. */
export interface ChainPage<E> {
  readonly headSeq: number;
  readonly entries: readonly E[];
}

/** What {@link syncChain} needs. */
export interface SyncChainOptions<E> {
  readonly log: VerifiedChain<E>;
  /** Asks the service for up to `limit` entries from `fromSeq`. */
  readonly fetch: (fromSeq: number, limit: number) => Promise<ChainPage<E>>;
  readonly limit: number;
  readonly entryHash: (e: E) => Uint8Array;
  readonly fail: ChainFail;
  /** Checks a page before any of it is used (it answers for the right log, say). */
  readonly checkPage?: (page: ChainPage<E>) => void;
  /** Runs before a page's new entries are verified (to refresh what the rules depend on). */
  readonly beforeAppend?: (entries: readonly E[]) => Promise<void>;
  /** The reader's own key: the entries it signed are checked by signing them again (verifyMany's `own`). */
  readonly own?: SigningKey | undefined;
}

/** Pages asked at once: the service reads the next ones while this client verifies the one before. */
const PAGES_IN_FLIGHT = 4;

/** A page asked for: where it starts, the verified length when it was asked, and the page with its signature checks already started. */
interface PageRequest<E> {
  readonly from: number;
  readonly askedAt: number;
  readonly arrived: Promise<{ page: ChainPage<E>; checked: Promise<void>[]; slices: E[][] }>;
}

/**
 * Brings `log` up to the service's head. It asks from the verified head
 * itself, so a changed head entry shows as a fork; a head below the verified
 * one is a rollback; a page that stops short of the claimed head is a gap.
 * Pages are asked ahead (a cold log's second page at once, then up to
 * {@link PAGES_IN_FLIGHT} toward the claimed head), each page's signatures
 * go to the pool as it arrives, and pages are applied strictly in order. A
 * page asked ahead may be older than the entries verified since: if it does
 * not start where the log ends, or shows a lower head or nothing new, it is
 * dropped and asked again, and only an answer to a request made after the
 * verified entries arrived can fail the sync. On a failure the log keeps
 * what was verified before it.
 */
export async function syncChain<E extends SignedChainEntry>(o: SyncChainOptions<E>): Promise<void> {
  const { log, fail } = o;
  const ask = (from: number): PageRequest<E> => {
    const arrived = o.fetch(from, o.limit).then((page) => {
      // Checked as soon as it is here, while the pages before it are applied.
      const slices: E[][] = [];
      for (let i = 0; i < page.entries.length; i += PAGE_SLICE) slices.push(page.entries.slice(i, i + PAGE_SLICE));
      return { page, checked: slices.map((slice) => preverifySignatures(slice, o.own)), slices };
    });
    // Awaited when its turn comes; marked handled now, as it may never come.
    arrived.catch(() => undefined);
    return { from, askedAt: log.length, arrived };
  };
  const queue: PageRequest<E>[] = [ask(Math.max(0, log.headSeq))];
  let step = o.limit;
  let nextAsk = queue[0]!.from + step;
  // A cold log's length is unknown: its second page is asked at once (a short log answers it empty, and it is dropped).
  if (log.length === 0) {
    queue.push(ask(nextAsk));
    nextAsk += step;
  }
  let first = true;
  let claimed = -1;
  for (;;) {
    const request = queue.shift()!;
    const { page, checked, slices } = await request.arrived;
    o.checkPage?.(page);
    // Asked before entries verified since: its answer may predate them.
    const stale = request.askedAt < log.length;
    let skip = 0;
    let served = 0;
    if (page.headSeq < log.headSeq || (stale && page.headSeq < claimed)) {
      if (!stale) throw fail(ChainErrorReason.rollback, `the service shows head ${page.headSeq}, ${log.headSeq} was verified`);
    } else {
      claimed = Math.max(claimed, page.headSeq);
      if (first && log.length > 0) {
        const again = page.entries[0];
        if (again?.seq !== log.headSeq) throw fail(ChainErrorReason.gap, "the page does not start at the verified head", log.headSeq);
        if (toBase64Url(o.entryHash(again)) !== toBase64Url(log.headHash)) throw fail(ChainErrorReason.fork, "a verified entry changed", again.seq);
        skip = 1;
      }
      first = false;
      served = page.entries.length - skip;
      // Pages asked after a short one would start too far on: asked again, in steps of what the service serves.
      if (served > 0 && page.entries.length < step && log.headSeq + served < page.headSeq) {
        step = page.entries.length;
        queue.splice(0);
      }
      for (const [k, slice] of slices.entries()) {
        // This thread would only wait here: it checks the slices no pool worker has taken yet meanwhile.
        await helpCryptoPoolUntil(checked[k]!);
        await checked[k];
        const fresh = k === 0 && skip > 0 ? slice.slice(skip) : slice;
        if (fresh.length === 0) continue;
        await o.beforeAppend?.(fresh);
        log.append(fresh);
      }
      if (log.headSeq >= claimed) return;
      if (served === 0 && !stale) throw fail(ChainErrorReason.gap, `the service claims head ${claimed} but served entries only to ${log.headSeq}`);
    }
    if (queue[0] !== undefined && queue[0].from !== log.length) queue.splice(0);
    if (queue.length === 0) nextAsk = log.length;
    while (queue.length < PAGES_IN_FLIGHT && (queue.length === 0 || nextAsk <= claimed)) {
      queue.push(ask(nextAsk));
      nextAsk += step;
    }
  }
}

/** A verified head a client keeps across processes. */
export interface PinnedHead {
  readonly seq: number;
  /** Entry hash, base64url. */
  readonly hash: string;
}

/**
 * A head verified in an earlier process must still be in the log, unchanged
 * (threat: a service that rewinds or rewrites history between two runs).
 * Returns the head to pin now, or undefined when the pin is already current.
 */
export function checkPinnedHead(log: Pick<VerifiedChain<unknown>, "headSeq" | "headHash" | "hashAt">, pinned: PinnedHead | undefined, fail: ChainFail): PinnedHead | undefined {
  if (pinned !== undefined) {
    if (pinned.seq > log.headSeq) throw fail(ChainErrorReason.rollback, `head ${pinned.seq} was verified before, the service shows ${log.headSeq}`);
    if (toBase64Url(log.hashAt(pinned.seq)!) !== pinned.hash) throw fail(ChainErrorReason.fork, "the entry verified before has changed", pinned.seq);
    if (pinned.seq >= log.headSeq) return undefined;
  }
  return { seq: log.headSeq, hash: toBase64Url(log.headHash) };
}
