import { createHash } from "node:crypto";
import type { BlobsGetBeginReply, BlobsGetChunkReply, BlobsPutBeginReply, BlobsPutChunkReply, BlobsPutEndReply } from "@unibus/contracts";
import { ErrorCode, ErrorReason, ServiceErrorCodeHeader, Subjects, UnibusError, decodeBinaryFrame, decodeReply, encodeBinaryFrame } from "@unibus/contracts";
import type { UnibusClient } from "./client.js";
import { BlobFormat, BlobIntegrityError, decodeBlobKey, decryptBlobChunks, encodeBlobKey, encryptBlobChunks, generateBlobKey } from "./blobs-format.js";

/** Ciphertext bytes a transfer keeps in flight by default: about 4 MiB, so either side buffers that much per transfer at most. */
const BLOB_WINDOW_BYTES = 4 * 1024 * 1024;

/** Chunk requests in flight: the caller's choice, else as many as fit the byte window (2–8; 4 with the service's ~1 MB chunks). */
function windowOf(inFlight: number | undefined, chunkBytes = BlobFormat.cipherChunkBytes): number {
  if (inFlight === undefined) return Math.max(2, Math.min(8, Math.floor(BLOB_WINDOW_BYTES / chunkBytes)));
  if (!Number.isSafeInteger(inFlight) || inFlight < 1 || inFlight > 64) throw new UnibusError(ErrorCode.BadRequest, ErrorReason.SchemaViolation, "inFlight must be an integer from 1 to 64");
  return inFlight;
}

/**
 * Joins sealed chunks into wire chunks of at most `chunkBytes` (whole sealed
 * chunks only, so the service's and a downloader's chunk boundaries stay
 * aligned). One request per ~1 MB instead of per 64 KiB: a fifteenth of the
 * signatures, verifications and round trips.
 */
async function* wireChunks(sealed: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, chunkBytes: number): AsyncGenerator<Uint8Array> {
  let parts: Uint8Array[] = [];
  let have = 0;
  const flush = (): Uint8Array => {
    const out = parts.length === 1 ? parts[0]! : new Uint8Array(have);
    if (parts.length > 1) {
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.byteLength;
      }
    }
    parts = [];
    have = 0;
    return out;
  };
  for await (const chunk of sealed) {
    if (have > 0 && have + chunk.byteLength > chunkBytes) yield flush();
    parts.push(chunk);
    have += chunk.byteLength;
  }
  if (have > 0) yield flush();
}

/** Progress of a blob transfer, in ciphertext bytes. */
export type BlobProgress = (done: number, total: number) => void;

/**
 * What {@link putBlob} reads: bytes in memory, a re-openable source (read
 * twice: once to hash, once to send; a file fits), or a one-shot stream
 * (its ciphertext is held in memory between the two passes).
 */
export type BlobInput = Uint8Array | { open(): AsyncIterable<Uint8Array> } | AsyncIterable<Uint8Array> | ReadableStream<Uint8Array>;

/** Options of {@link putBlob}. */
export interface PutBlobOptions {
  /** Called after each chunk the service accepted. */
  onProgress?: BlobProgress;
  /** Per-request timeout in ms; defaults to the client's. */
  timeoutMs?: number;
  /** Chunk requests sent before waiting for the oldest reply, 1–64; default: about 4 MiB of chunks (4 of the service's ~1 MB chunks). */
  inFlight?: number;
}

/** Options of {@link getBlob} and {@link streamBlob}. */
export interface GetBlobOptions {
  /** Called after each chunk received. */
  onProgress?: BlobProgress;
  /** Chunks requested ahead of the one being read, 1–64; default: about 4 MiB of chunks (4 of the service's ~1 MB chunks). */
  inFlight?: number;
  /** Per-request timeout in ms; defaults to the client's. */
  timeoutMs?: number;
}

/** A stored blob as its uploader shares it: the id and the key travel together inside an E2E room message. */
export interface PutBlobResult {
  /** Lowercase hex SHA-256 of the ciphertext. */
  readonly blobId: string;
  /** The per-blob key, base64url. Secret: share it only inside an encrypted room message. */
  readonly key: string;
  /** Ciphertext size in bytes. */
  readonly size: number;
  /** False when the same ciphertext was already stored in the room. */
  readonly created: boolean;
}

async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  await Promise.resolve();
  yield bytes;
}

function sourceOf(input: BlobInput): { reopenable: boolean; open(): AsyncIterable<Uint8Array> } {
  if (input instanceof Uint8Array) return { reopenable: true, open: () => once(input) };
  if ("open" in input && typeof input.open === "function") return { reopenable: true, open: () => input.open() };
  return { reopenable: false, open: () => input as AsyncIterable<Uint8Array> };
}

async function binaryRequest<T>(client: UnibusClient, subject: string, body: unknown, payload: Uint8Array | undefined, timeoutMs: number | undefined): Promise<{ reply: T; payload: Uint8Array }> {
  const msg = await client.requestBytes(subject, encodeBinaryFrame(body, payload), timeoutMs === undefined ? {} : { timeoutMs });
  const frame = msg.headers?.get(ServiceErrorCodeHeader) ? null : decodeBinaryFrame(msg.data);
  // An error reply is plain JSON with micro error headers; decodeReply throws it.
  if (frame === null) return { reply: decodeReply<T>(msg), payload: new Uint8Array(0) };
  return { reply: decodeReply<T>({ data: frame.json, headers: msg.headers }), payload: frame.payload };
}

/**
 * Encrypts `input` on this side with a fresh key and uploads the ciphertext
 * to `roomId` (blobs service, contracts/specs/blobs.md). The service never
 * sees the key or plaintext; it checks size and SHA-256 and commits the blob
 * only when both match.
 *
 * @throws UnibusError 403 for a non-member, 413 over the service limit.
 */
export async function putBlob(client: UnibusClient, roomId: string, input: BlobInput, opts: PutBlobOptions = {}): Promise<PutBlobResult> {
  windowOf(opts.inFlight);
  const key = generateBlobKey();
  try {
    const source = sourceOf(input);
    // Bytes in memory keep their ciphertext from pass 1 (one AEAD call per
    // chunk, at the cost of a second copy the caller's size already implies);
    // a file is sealed again in pass 2 so memory stays bounded.
    const hold = !source.reopenable || input instanceof Uint8Array;
    // Pass 1: the id is the hash of the ciphertext, and put.begin names it.
    const hash = createHash("sha256");
    let size = 0;
    const held: Uint8Array[] = [];
    for await (const chunk of encryptBlobChunks(key, source.open())) {
      hash.update(chunk);
      size += chunk.byteLength;
      if (hold) held.push(chunk);
    }
    const blobId = hash.digest("hex");
    const begin = await client.request<BlobsPutBeginReply>(Subjects.blobs.putBegin, { roomId, blobId, size }, opts);
    if (begin.chunkBytes < BlobFormat.cipherChunkBytes) throw new UnibusError(ErrorCode.Internal, ErrorReason.MalformedReply, "service chunk size is smaller than the blob format's");
    const chunkSubject = `${Subjects.blobs.putChunk}.${begin.replica}`;
    const wireBytes = Math.floor(begin.chunkBytes / BlobFormat.cipherChunkBytes) * BlobFormat.cipherChunkBytes;
    const depth = windowOf(opts.inFlight, wireBytes);
    // Pass 2: the same key and derived nonces give the same ciphertext; a
    // source that changed in between fails the service's hash check.
    const sealed = wireChunks(hold ? held : encryptBlobChunks(key, source.open()), wireBytes);
    let index = 0;
    let sent = 0;
    // Up to `depth` chunks in flight: the service takes them in arrival
    // order (an out-of-order index cancels the upload), and the depth hides
    // the round trip per chunk while bounding what either side buffers.
    const inFlight: Promise<void>[] = [];
    try {
      for await (const chunk of sealed) {
        if (inFlight.length >= depth) await inFlight.shift();
        const p = binaryRequest<BlobsPutChunkReply>(client, chunkSubject, { uploadId: begin.uploadId, index: index++ }, chunk, opts.timeoutMs).then(() => {
          sent += chunk.byteLength;
          opts.onProgress?.(sent, size);
        });
        // Awaited in order below; after a failure the rest are moot (the
        // service cancelled the upload) and must not surface as unhandled.
        p.catch(() => undefined);
        inFlight.push(p);
      }
      while (inFlight.length > 0) await inFlight.shift();
    } finally {
      held.length = 0;
    }
    const end = await client.request<BlobsPutEndReply>(`${Subjects.blobs.putEnd}.${begin.replica}`, { uploadId: begin.uploadId }, opts);
    return { blobId: end.blobId, key: encodeBlobKey(key), size: end.size, created: end.created };
  } finally {
    key.fill(0);
  }
}

async function* sealedChunks(client: UnibusClient, roomId: string, blobId: string, begin: BlobsGetBeginReply, opts: GetBlobOptions): AsyncGenerator<Uint8Array> {
  const subject = `${Subjects.blobs.getChunk}.${begin.replica}`;
  const depth = windowOf(opts.inFlight, begin.chunkBytes);
  // Never ask past the last chunk the declared size allows: the service
  // closes the download after the final one.
  const chunks = Math.max(1, Math.ceil(begin.size / begin.chunkBytes));
  const ask = (index: number): Promise<{ reply: BlobsGetChunkReply; payload: Uint8Array }> => {
    const p = binaryRequest<BlobsGetChunkReply>(client, subject, { downloadId: begin.downloadId, index }, undefined, opts.timeoutMs);
    // Observed in order below; this only keeps an abandoned one from being unhandled.
    p.catch(() => undefined);
    return p;
  };
  // Up to `depth` requests ahead, answered in order by the service.
  const ahead: Promise<{ reply: BlobsGetChunkReply; payload: Uint8Array }>[] = [];
  let asked = 0;
  let received = 0;
  for (let index = 0; ; index++) {
    while (asked < chunks && ahead.length < depth) ahead.push(ask(asked++));
    const next = ahead.shift();
    if (next === undefined) throw new BlobIntegrityError(`blob ${roomId}/${blobId}: no final chunk within the declared size`);
    const { reply, payload } = await next;
    received += payload.byteLength;
    if (reply.index !== index || received > begin.size) throw new BlobIntegrityError(`blob ${roomId}/${blobId}: chunk ${index} out of order or over size`);
    opts.onProgress?.(received, begin.size);
    yield payload;
    if (reply.final) return;
  }
}

/**
 * Downloads and decrypts a blob chunk by chunk. Each chunk is authenticated
 * before its plaintext is yielded; the ciphertext's SHA-256 is compared with
 * `blobId` when the stream ends, so the content is verified only once the
 * generator has finished without throwing.
 *
 * @throws BlobIntegrityError on a tampered, truncated or substituted blob.
 */
export async function* streamBlob(client: UnibusClient, roomId: string, blobId: string, key: string | Uint8Array, opts: GetBlobOptions = {}): AsyncGenerator<Uint8Array> {
  const rawKey = decodeBlobKey(key);
  windowOf(opts.inFlight);
  const begin = await client.request<BlobsGetBeginReply>(Subjects.blobs.getBegin, { roomId, blobId }, opts);
  yield* decryptBlobChunks(rawKey, blobId, begin.size, sealedChunks(client, roomId, blobId, begin, opts));
}

/** Downloads, verifies and decrypts a whole blob into memory; see {@link streamBlob}. */
export async function getBlob(client: UnibusClient, roomId: string, blobId: string, key: string | Uint8Array, opts: GetBlobOptions = {}): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const part of streamBlob(client, roomId, blobId, key, opts)) {
    parts.push(part);
    total += part.byteLength;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
