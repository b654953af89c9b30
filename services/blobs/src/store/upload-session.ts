import { createHash } from "node:crypto";
import type { Hash } from "node:crypto";
import type { ObjectInfo, ObjectStore } from "@nats-io/obj";

/** Thrown into an aborted upload's stream, so the object store purges the chunks it wrote. */
export class UploadAborted extends Error {
  constructor(reason: string) {
    super(`upload aborted: ${reason}`);
    this.name = "UploadAborted";
  }
}

/**
 * One upload in flight on this replica. Chunks are handed to a running
 * `ObjectStore.put` through a pull-driven stream as they arrive, so the service
 * holds only the chunks a client has in flight (no whole-file buffering), while
 * the SHA-256 of every byte is computed on the side. The object only becomes
 * visible when `commit()` ends the stream and the put writes its metadata
 * record; `abort()` errors the stream and the object store purges the chunks,
 * so an interrupted upload never leaves a committed object.
 */
export class UploadSession {
  /** Next expected chunk index; chunks must arrive in order. */
  nextIndex = 0;
  /** Ciphertext bytes received so far. */
  received = 0;
  readonly #hash: Hash = createHash("sha256");
  readonly #put: Promise<ObjectInfo>;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #pull: (() => void) | undefined;
  #pulled: Promise<void>;
  #closed = false;
  /** The last write handed on, so overlapping writes keep their order. */
  #tail: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    readonly uploadId: string,
    readonly principal: string,
    readonly roomId: string,
    readonly blobId: string,
    readonly size: number,
    readonly objectName: string,
    store: ObjectStore,
    storeChunkBytes: number,
    private readonly idleMs: number,
    private readonly onIdle: (session: UploadSession) => void,
  ) {
    this.#pulled = new Promise((resolve) => (this.#pull = resolve));
    // highWaterMark 0: the stream asks for a chunk only when the object store
    // is ready for one, which is the back-pressure the chunk replies wait on.
    const stream = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.#controller = controller;
        },
        pull: () => {
          this.#pull?.();
          return Promise.resolve();
        },
      },
      { highWaterMark: 0 },
    );
    // One store message per wire chunk: a download then serves each stored
    // chunk as one reply without re-cutting it, and a put publishes (and
    // waits for the ack of) one message per client request, not several.
    this.#put = store.put({ name: objectName, options: { max_chunk_size: storeChunkBytes } }, stream);
    // A put that fails on its own (store error) stops reading: release a
    // waiting write so the chunk fails instead of hanging. The outcome itself
    // is read by commit().
    this.#put.catch(() => {
      this.#closed = true;
      this.#pull?.();
    });
    this.touch();
  }

  /** Restarts the idle timer. */
  touch(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.onIdle(this), this.idleMs);
    this.#timer.unref();
  }

  /**
   * Hands one chunk to the object store put once it is ready for it. Calls
   * may overlap (a client keeps several chunks in flight); each waits behind
   * the one before, so chunks reach the store in the order they were hashed
   * and each still waits for its own pull.
   */
  write(chunk: Uint8Array): Promise<void> {
    this.received += chunk.byteLength;
    this.#hash.update(chunk);
    // A copy: the request buffer belongs to the transport.
    const copy = chunk.slice();
    const done = this.#tail.then(async () => {
      await this.#pulled;
      if (this.#closed) throw new UploadAborted("closed");
      this.#pulled = new Promise((resolve) => (this.#pull = resolve));
      this.#controller.enqueue(copy);
    });
    this.#tail = done.catch(() => undefined);
    return done;
  }

  /** Lowercase hex SHA-256 of everything written (call once, at the end). */
  digestHex(): string {
    return this.#hash.digest("hex");
  }

  /** Ends the stream; resolves when the object store has durably written the object's metadata. */
  async commit(): Promise<ObjectInfo> {
    clearTimeout(this.#timer);
    this.#closed = true;
    this.#controller.close();
    return this.#put;
  }

  /** Errors the stream (the object store purges the chunks) and waits for that clean-up. */
  async abort(reason: string): Promise<void> {
    clearTimeout(this.#timer);
    if (this.#closed) return;
    this.#closed = true;
    this.#pull?.();
    this.#controller.error(new UploadAborted(reason));
    await this.#put.then(
      () => undefined,
      () => undefined,
    );
  }
}
