import type { DenyReason } from "./handlers/authorize.js";

/** Tuning of {@link DenialCache}; every field has a default in {@link DenialCacheDefaults}. */
export interface DenialCacheOptions {
  /**
   * How long a principal's "unknown" or "revoked" answer is reused. It bounds
   * how long an admin's ADD can stay hidden when the users-bucket watch that
   * invalidates entries is slow or down (read-your-writes for additions).
   */
  readonly ttlMs?: number;
  /** Principals remembered at most (oldest dropped first). */
  readonly maxEntries?: number;
  /** Window over which refusals per client address are counted. */
  readonly addressWindowMs?: number;
  /** Fully checked refusals from one address within the window after which it is rate-limited. */
  readonly addressThreshold?: number;
  /** Addresses tracked at most. */
  readonly maxAddresses?: number;
  /** How long a principal that logged in stays exempt from its address's rate limit. */
  readonly admittedTtlMs?: number;
  /** Principals remembered as recently admitted at most. */
  readonly maxAdmitted?: number;
  /** Cache answers of one principal are reported to the audit trail at most once per this interval. */
  readonly reportEveryMs?: number;
  /** Delay of a principal's second refusal's answer; doubles with each further one (server-side back-off). */
  readonly delayInitialMs?: number;
  /**
   * Ceiling of that delay, and the delay of a rate-limited address's
   * refusals. Kept well under nats-server's auth timeout (2 s by default,
   * `authorization { timeout }`): the server waits that long for the answer
   * and a later one is dropped.
   */
  readonly delayMaxMs?: number;
  /**
   * How long a principal's refusals are remembered for its back-off after the
   * last one. Longer than {@link ttlMs} on purpose: the back-off must survive
   * the cache entry's expiry, or every expiry restarts a retry loop at full speed.
   */
  readonly strikeMemoryMs?: number;
}

/** Defaults of {@link DenialCacheOptions}. */
export const DenialCacheDefaults = {
  ttlMs: 1_500,
  maxEntries: 50_000,
  addressWindowMs: 1_000,
  addressThreshold: 50,
  maxAddresses: 10_000,
  admittedTtlMs: 10 * 60_000,
  maxAdmitted: 50_000,
  reportEveryMs: 1_000,
  delayInitialMs: 50,
  delayMaxMs: 1_000,
  strikeMemoryMs: 60_000,
} as const satisfies Required<DenialCacheOptions>;

interface DeniedPrincipal {
  reason: DenyReason;
  expires: number;
  /** Cache answers since the last one handed to the audit trail. */
  repeats: number;
  /** When this principal's refusal was last reported. */
  reportedAt: number;
}

/** A principal's recent refusals, for its back-off. */
interface Strikes {
  count: number;
  last: number;
}

interface AddressWindow {
  start: number;
  count: number;
}

/** A cache answer: the reason first decided, and whether to report it (with the answers folded into it). */
export interface CachedDenial {
  reason: DenyReason;
  /**
   * Undefined: count only, no audit record (a retry loop must not flood the
   * stream). A number: report this answer, standing for that many unreported
   * earlier ones as well.
   */
  report: number | undefined;
  /** How long to hold the answer ({@link DenialCache.strike}): a client retrying in a tight loop is slowed to one attempt per this. */
  delayMs: number;
}

/** Map with insertion-order eviction once `max` is exceeded. */
function boundedSet<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > max) {
    const oldest = map.keys().next().value;
    if (oldest !== undefined) map.delete(oldest);
  }
}

/**
 * Makes retry storms cheap (a leaked or revoked client reconnecting in a
 * tight loop): a principal refused as unknown or revoked, after its nonce
 * signature verified, is refused again for {@link DenialCacheOptions.ttlMs}
 * without a signature check or a directory read; every refusal of a
 * principal after its first is held a little longer (50 ms doubling to 1 s,
 * remembered for a minute, well past the cache entry), so a retry loop slows
 * to about one attempt a second per client instead of saturating the server,
 * while a first refusal (a human who picked the wrong identity) comes at once;
 * an address producing many fully checked refusals is refused outright (and
 * slowly) for the rest of its window, except for principals that recently
 * logged in (so an attacker behind a shared address cannot lock out its
 * legitimate users).
 *
 * It only ever denies. Entries are made only from verified-signature answers
 * (a forged signature must not let anyone lock a real member out) and are
 * dropped as soon as the users bucket changes that key; the TTL bounds the
 * stale window when that notice is late.
 */
export class DenialCache {
  readonly #o: Required<DenialCacheOptions>;
  readonly #principals = new Map<string, DeniedPrincipal>();
  readonly #addresses = new Map<string, AddressWindow>();
  readonly #admitted = new Map<string, number>();
  readonly #strikes = new Map<string, Strikes>();
  #generation = 0;

  constructor(options: DenialCacheOptions = {}) {
    this.#o = { ...DenialCacheDefaults, ...options };
  }

  /**
   * The cached refusal of `principal`, or undefined (expired entries are
   * dropped). A hit is a refusal, so it counts as a {@link strike}.
   */
  lookup(principal: string, now = Date.now()): CachedDenial | undefined {
    const hit = this.#principals.get(principal);
    if (hit === undefined) return undefined;
    if (hit.expires <= now) {
      this.#principals.delete(principal);
      return undefined;
    }
    const delayMs = this.strike(principal, now);
    if (now - hit.reportedAt < this.#o.reportEveryMs) {
      hit.repeats++;
      return { reason: hit.reason, report: undefined, delayMs };
    }
    const report = hit.repeats;
    hit.repeats = 0;
    hit.reportedAt = now;
    return { reason: hit.reason, report, delayMs };
  }

  /** Changes on every invalidation; {@link remember} takes the value read before the directory was. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Remembers a refusal decided from the directory after the signature
   * verified, unless an invalidation arrived since `seenGeneration`: the
   * directory answer may predate an ADD whose notice already came and went.
   */
  remember(principal: string, reason: DenyReason, seenGeneration: number, now = Date.now()): void {
    if (seenGeneration !== this.#generation) return;
    boundedSet(this.#principals, principal, { reason, expires: now + this.#o.ttlMs, repeats: 0, reportedAt: now }, this.#o.maxEntries);
  }

  /**
   * Counts one refusal of `principal` and says how long to hold its answer:
   * 0 for the first within {@link DenialCacheOptions.strikeMemoryMs}, then
   * `delayInitialMs` doubling to `delayMaxMs`. Only refusals are ever held,
   * so a key claimed by someone else (a forged signature) slows that
   * someone's refusals, never the owner's logins.
   */
  strike(principal: string, now = Date.now()): number {
    const s = this.#strikes.get(principal);
    const count = s === undefined || now - s.last >= this.#o.strikeMemoryMs ? 1 : s.count + 1;
    boundedSet(this.#strikes, principal, { count, last: now }, this.#o.maxEntries);
    return count < 2 ? 0 : Math.min(this.#o.delayMaxMs, this.#o.delayInitialMs * 2 ** Math.min(count - 2, 20));
  }

  /** Forgets `principal` (its users record changed: an ADD must be seen at once). */
  invalidate(principal: string): void {
    this.#generation++;
    this.#principals.delete(principal);
  }

  /** Forgets every principal (the users-bucket watch was interrupted and may have missed changes). */
  clear(): void {
    this.#generation++;
    this.#principals.clear();
  }

  /** True when `address` is over its refusal budget and `principal` has not logged in recently. */
  addressLimited(address: string | undefined, principal: string, now = Date.now()): boolean {
    if (address === undefined) return false;
    const w = this.#addresses.get(address);
    if (w === undefined || now - w.start >= this.#o.addressWindowMs || w.count < this.#o.addressThreshold) return false;
    const admitted = this.#admitted.get(principal);
    return admitted === undefined || admitted <= now;
  }

  /** How long to hold a rate-limited address's refusal. */
  get rateLimitDelayMs(): number {
    return this.#o.delayMaxMs;
  }

  /** Counts one fully checked refusal from `address`. */
  noteRefusal(address: string | undefined, now = Date.now()): void {
    if (address === undefined) return;
    const w = this.#addresses.get(address);
    if (w === undefined || now - w.start >= this.#o.addressWindowMs) {
      boundedSet(this.#addresses, address, { start: now, count: 1 }, this.#o.maxAddresses);
    } else {
      w.count++;
    }
  }

  /** Remembers that `principal` passed every check, exempting it from address limits for a while. */
  noteAdmitted(principal: string, now = Date.now()): void {
    this.#strikes.delete(principal);
    boundedSet(this.#admitted, principal, now + this.#o.admittedTtlMs, this.#o.maxAdmitted);
  }

  /** Number of principals with a cached refusal (for tests and stats). */
  get size(): number {
    return this.#principals.size;
  }

  /** Number of principals whose back-off is remembered (for tests and stats). */
  get strikesSize(): number {
    return this.#strikes.size;
  }
}
