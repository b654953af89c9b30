/**
 * Anti-replay state for one (sender, epoch) counter space: the highest
 * counter seen and a bitmap of the `size` counters below it (IPsec-style
 * sliding window, RFC 4303 §3.4.3). A counter at or below `highest - size`
 * can no longer be told apart from a replay and is rejected as one.
 */
export class ReplayWindow {
  #highest = -1;
  readonly #bits: Uint32Array;

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 32 || size % 32 !== 0) throw new RangeError("window size must be a multiple of 32");
    this.#bits = new Uint32Array(size / 32);
  }

  #seen(c: number): boolean {
    const i = c % this.size;
    return (this.#bits[i >>> 5]! & (1 << (i & 31))) !== 0;
  }

  /** True iff none of `first .. first+count-1` was seen and all are inside the window. Does not record. */
  fresh(first: number, count: number): boolean {
    for (let c = first; c < first + count; c++) {
      if (c <= this.#highest - this.size) return false;
      if (c <= this.#highest && this.#seen(c)) return false;
    }
    return true;
  }

  /** Records `first .. first+count-1` as seen (call only after {@link fresh} and authentication). */
  record(first: number, count: number): void {
    const last = first + count - 1;
    if (last > this.#highest) {
      if (last - this.#highest >= this.size) this.#bits.fill(0);
      else {
        // Counters are the sender's clock in µs, so an idle room's next
        // frame moves the window by about a thousand counters: whole words
        // are cleared at once (size is a multiple of 32, so a word never
        // wraps), the ragged ends bit by bit.
        let c = this.#highest + 1;
        while (c <= last) {
          const i = c % this.size;
          if ((i & 31) === 0 && c + 31 <= last) {
            this.#bits[i >>> 5] = 0;
            c += 32;
          } else {
            this.#bits[i >>> 5]! &= ~(1 << (i & 31));
            c++;
          }
        }
      }
      this.#highest = last;
    }
    for (let c = Math.max(first, last - this.size + 1); c <= last; c++) {
      const i = c % this.size;
      this.#bits[i >>> 5]! |= 1 << (i & 31);
    }
  }
}
