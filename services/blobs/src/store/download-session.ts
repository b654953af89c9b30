import type { ObjectResult } from "@nats-io/obj";

/**
 * One download in flight on this replica: the object store's reader, read
 * only as far as the client has asked, re-cut into protocol chunks of exactly
 * `chunkBytes` (the last may be shorter).
 */
export class DownloadSession {
  /** Next chunk index the client may ask for. */
  nextIndex = 0;
  /** Bytes sent so far. */
  sent = 0;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #pending: Uint8Array = new Uint8Array(0);
  #timer: NodeJS.Timeout | undefined;
  /** The last read handed out, so overlapping reads keep their order. */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(
    readonly downloadId: string,
    readonly principal: string,
    readonly size: number,
    private readonly chunkBytes: number,
    result: ObjectResult,
    private readonly idleMs: number,
    private readonly onIdle: (session: DownloadSession) => void,
  ) {
    this.#reader = result.data.getReader();
    // The object store reports a digest mismatch or a consumer failure here;
    // the reader fails too, and the client checks the hash in any case.
    result.error.catch(() => undefined);
    this.touch();
  }

  /** Restarts the idle timer. */
  touch(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.onIdle(this), this.idleMs);
    this.#timer.unref();
  }

  /**
   * Reads the next chunk; `final` when it completes the object. Calls may
   * overlap (a client keeps several requests in flight); each reads after the
   * one before, so chunks go out in index order.
   */
  next(): Promise<{ chunk: Uint8Array; final: boolean }> {
    const read = this.#tail.then(() => this.#read());
    this.#tail = read.then(
      () => undefined,
      () => undefined,
    );
    return read;
  }

  async #read(): Promise<{ chunk: Uint8Array; final: boolean }> {
    const want = Math.min(this.chunkBytes, this.size - this.sent);
    const parts: Uint8Array[] = [];
    let have = 0;
    const take = (from: Uint8Array): void => {
      const n = Math.min(want - have, from.byteLength);
      parts.push(from.subarray(0, n));
      have += n;
      this.#pending = from.subarray(n);
    };
    if (this.#pending.byteLength > 0) take(this.#pending);
    while (have < want) {
      const { done, value } = await this.#reader.read();
      if (done) throw new Error("object ended before its recorded size");
      take(value);
    }
    this.sent += have;
    // Store chunks are larger than protocol chunks, so most replies are one
    // slice of one store chunk and need no copy.
    if (parts.length === 1) return { chunk: parts[0]!, final: this.sent === this.size };
    const chunk = new Uint8Array(have);
    let at = 0;
    for (const p of parts) {
      chunk.set(p, at);
      at += p.byteLength;
    }
    return { chunk, final: this.sent === this.size };
  }

  /** Stops reading and releases the object store consumer. */
  async close(): Promise<void> {
    clearTimeout(this.#timer);
    await this.#reader.cancel().catch(() => undefined);
  }
}
