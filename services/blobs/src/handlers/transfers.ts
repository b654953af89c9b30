import { randomBytes } from "node:crypto";
import type { ObjectStore } from "@nats-io/obj";
import { ErrorCode, ErrorReason, UnibusError } from "@unibus/contracts";
import { binaryReply, defineCounter, handles } from "@unibus/kit";
import type { Caller, SignedCaller } from "@unibus/kit";
import type { Logger } from "pino";
import { DownloadSession } from "../store/download-session.js";
import { BLOB_CHUNK_BYTES, blobObjectName } from "../limits.js";
import type { RoomAccess } from "../store/room-access.js";
import { UploadSession } from "../store/upload-session.js";

/** The limits the transfer handlers enforce (see `BlobsDeps` in service.ts). */
export interface TransferLimits {
  /** Largest blob (ciphertext bytes) accepted. */
  readonly maxBlobBytes: number;
  /** Idle time after which an upload or download is abandoned. */
  readonly sessionIdleMs: number;
  /** Sessions held at once by this replica. */
  readonly maxSessions: number;
  /** Ciphertext bytes per chunk request or reply (`wireChunkBytes` in limits.ts); default one sealed chunk. */
  readonly wireChunkBytes?: number;
}

/** Encrypted blob bytes stored (in) and served (out); the bytes are ciphertext, their count is not secret. */
const blobBytes = defineCounter("unibus_blob_bytes_total", "Blob chunk bytes stored (in) and served (out)", ["direction"] as const);

/** Stable reasons of blobs errors, beyond the common ones. */
export const BlobsErrorReason = {
  HashMismatch: "hash_mismatch",
  SizeMismatch: "size_mismatch",
  UploadUnknown: "upload_unknown",
  DownloadUnknown: "download_unknown",
  ChunkOutOfOrder: "chunk_out_of_order",
  BlobNotFound: "blob_not_found",
} as const;

function signed(caller: Caller): SignedCaller {
  // Access.Signed guarantees this; the check keeps a definition slip from failing open.
  if (caller.anonymous) throw new UnibusError(ErrorCode.Unauthorized, ErrorReason.SignatureMissing, "request must carry a signed envelope");
  return caller;
}

function sessionId(): string {
  return randomBytes(16).toString("hex");
}

/** Ciphertext sizes the chunk format can produce: every chunk carries a 16-byte tag, so a short last chunk has at least 16 bytes. */
function possibleCiphertextSize(size: number): boolean {
  const rest = size % BLOB_CHUNK_BYTES;
  return size >= 16 && (rest === 0 || rest >= 16);
}

/**
 * The upload (`put.*`) and download (`get.*`) handlers of one replica, over
 * one session table: an upload's stream lives in this replica's memory, so
 * its chunks must reach this replica (the chunk and end endpoints are
 * per-replica), and the session cap counts both directions.
 */
export function transferHandlers(
  replica: string,
  store: ObjectStore,
  access: RoomAccess,
  opts: TransferLimits,
  logger?: Logger,
) {
  const chunkBytes = opts.wireChunkBytes ?? BLOB_CHUNK_BYTES;
  const uploads = new Map<string, UploadSession>();
  const downloads = new Map<string, DownloadSession>();

  const dropUpload = async (u: UploadSession, reason: string): Promise<void> => {
    uploads.delete(u.uploadId);
    await u.abort(reason);
  };
  const dropDownload = async (d: DownloadSession): Promise<void> => {
    downloads.delete(d.downloadId);
    await d.close();
  };
  const ownUpload = (uploadId: string, principal: string): UploadSession => {
    const u = uploads.get(uploadId);
    // Another principal's upload id is "unknown" to the caller, and the
    // upload is left alone: a guess must not be able to cancel it.
    if (u === undefined || u.principal !== principal) throw new UnibusError(ErrorCode.NotFound, BlobsErrorReason.UploadUnknown, "no such upload on this replica");
    return u;
  };
  const capacity = (): void => {
    if (uploads.size + downloads.size >= opts.maxSessions) throw new UnibusError(ErrorCode.TooManyRequests, ErrorReason.TooManyRequests, "too many transfers in progress; retry later");
  };

  const handlers = {
    putBegin: handles("blobs", "put.begin", {
      async handler(req, caller) {
        const { principal } = signed(caller);
        if (req.size > opts.maxBlobBytes) {
          throw new UnibusError(ErrorCode.PayloadTooLarge, ErrorReason.PayloadTooLarge, `blob exceeds ${opts.maxBlobBytes} bytes`, { details: { limit: opts.maxBlobBytes } });
        }
        if (!possibleCiphertextSize(req.size)) throw new UnibusError(ErrorCode.BadRequest, BlobsErrorReason.SizeMismatch, "size is not a possible ciphertext size");
        await access.requireMember(req.roomId, principal);
        capacity();
        const uploadId = sessionId();
        const u = new UploadSession(uploadId, principal, req.roomId, req.blobId, req.size, blobObjectName(req.roomId, req.blobId), store, chunkBytes, opts.sessionIdleMs, (s) =>
          // Logged once the purge is done: an operator (and a test) sees an abandoned upload end.
          void dropUpload(s, "idle").then(() => logger?.info({ op: "put_begin", uploadId: s.uploadId }, "abandoned upload aborted after the idle time")),
        );
        uploads.set(uploadId, u);
        return { uploadId, replica, chunkBytes, maxBytes: opts.maxBlobBytes };
      },
    }),
    putChunk: handles("blobs", "put.chunk", {
      binary: true,
      maxPayloadBytes: chunkBytes + 1024,
      async handler(req, caller, ctx) {
        const u = ownUpload(req.uploadId, signed(caller).principal);
        const chunk = ctx.payload;
        if (chunk.byteLength > chunkBytes) {
          // The frame limit leaves room for the JSON part; the ciphertext itself may not exceed chunkBytes.
          await dropUpload(u, "chunk too large");
          throw new UnibusError(ErrorCode.PayloadTooLarge, ErrorReason.PayloadTooLarge, `a chunk carries at most ${chunkBytes} bytes; the upload is cancelled`, { details: { limit: chunkBytes } });
        }
        if (req.index !== u.nextIndex || chunk.byteLength === 0) {
          await dropUpload(u, "out of order");
          throw new UnibusError(ErrorCode.BadRequest, BlobsErrorReason.ChunkOutOfOrder, `expected a non-empty chunk ${u.nextIndex}; the upload is cancelled`);
        }
        u.nextIndex += 1;
        // Counted on the bytes that arrive, not on the declared size, and
        // before anything reaches the store.
        if (u.received + chunk.byteLength > u.size) {
          await dropUpload(u, "over size");
          throw new UnibusError(ErrorCode.PayloadTooLarge, ErrorReason.PayloadTooLarge, "upload exceeds its declared size; the upload is cancelled");
        }
        u.touch();
        try {
          await u.write(chunk);
        } catch (err) {
          await dropUpload(u, "store failed");
          throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
        }
        blobBytes.inc({ direction: "in" }, chunk.byteLength);
        return { received: u.received };
      },
    }),
    putEnd: handles("blobs", "put.end", {
      async handler(req, caller) {
        const { principal } = signed(caller);
        const u = ownUpload(req.uploadId, principal);
        uploads.delete(u.uploadId);
        if (u.received !== u.size) {
          await u.abort("size mismatch");
          throw new UnibusError(ErrorCode.BadRequest, BlobsErrorReason.SizeMismatch, `received ${u.received} bytes, declared ${u.size}; nothing stored`);
        }
        if (u.digestHex() !== u.blobId) {
          await u.abort("hash mismatch");
          throw new UnibusError(ErrorCode.BadRequest, BlobsErrorReason.HashMismatch, "ciphertext does not hash to the blob id; nothing stored");
        }
        try {
          // Membership is checked again at the commit: a member removed
          // during a long upload must not still add to the room.
          await access.requireMember(u.roomId, principal);
        } catch (err) {
          await u.abort("not a member");
          throw err;
        }
        let existing: boolean;
        try {
          existing = (await store.info(u.objectName)) !== null;
        } catch (err) {
          await u.abort("store failed");
          throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
        }
        if (existing) {
          // Same id, same ciphertext: keep the stored copy, drop this one.
          await u.abort("already stored");
          return { roomId: u.roomId, blobId: u.blobId, size: u.size, created: false };
        }
        try {
          // Acknowledged only after the object store's metadata record is
          // acknowledged by JetStream: the blob is durable and complete.
          await u.commit();
        } catch (err) {
          throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
        }
        return { roomId: u.roomId, blobId: u.blobId, size: u.size, created: true };
      },
    }),
    getBegin: handles("blobs", "get.begin", {
      async handler(req, caller) {
        const { principal } = signed(caller);
        // Membership first: a non-member learns nothing, not even whether the blob exists.
        await access.requireMember(req.roomId, principal);
        capacity();
        let result;
        try {
          result = await store.get(blobObjectName(req.roomId, req.blobId));
        } catch (err) {
          throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
        }
        if (result === null) throw new UnibusError(ErrorCode.NotFound, BlobsErrorReason.BlobNotFound, "no such blob in this room");
        const downloadId = sessionId();
        const d = new DownloadSession(downloadId, principal, result.info.size, chunkBytes, result, opts.sessionIdleMs, (s) => void dropDownload(s));
        downloads.set(downloadId, d);
        return { downloadId, replica, size: result.info.size, chunkBytes };
      },
    }),
    getChunk: handles("blobs", "get.chunk", {
      binary: true,
      async handler(req, caller) {
        const { principal } = signed(caller);
        const d = downloads.get(req.downloadId);
        if (d === undefined || d.principal !== principal) throw new UnibusError(ErrorCode.NotFound, BlobsErrorReason.DownloadUnknown, "no such download on this replica");
        if (req.index !== d.nextIndex) {
          await dropDownload(d);
          throw new UnibusError(ErrorCode.BadRequest, BlobsErrorReason.ChunkOutOfOrder, `expected chunk ${d.nextIndex}; the download is cancelled`);
        }
        d.nextIndex += 1;
        d.touch();
        let next;
        try {
          next = await d.next();
        } catch (err) {
          await dropDownload(d);
          throw new UnibusError(ErrorCode.Unavailable, ErrorReason.Unavailable, "service unavailable", { cause: err });
        }
        if (next.final) await dropDownload(d);
        blobBytes.inc({ direction: "out" }, next.chunk.byteLength);
        return binaryReply({ index: req.index, final: next.final }, next.chunk);
      },
    }),
  };

  return {
    handlers,
    async shutdown() {
      await Promise.all([...uploads.values()].map((u) => dropUpload(u, "service stopping")));
      await Promise.all([...downloads.values()].map((d) => dropDownload(d)));
    },
  };
}
