import { randomBytes } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { Objm, setSha256Backend } from "@nats-io/obj";
import type { ObjectStore } from "@nats-io/obj";
import { ErrorCode, ErrorReason, ServiceName, Subjects, UnibusError } from "@unibus/contracts";
import { Access, binaryReply, defineCounter, defineService, endpoint, serviceJetStream, startService } from "@unibus/kit";
import type { Caller, KitDeps, RunningService, ServiceDefinition, SignedCaller } from "@unibus/kit";
import { pino } from "pino";
import type { Logger } from "pino";
import packageJson from "../package.json" with { type: "json" };
import { DownloadSession } from "./download-session.js";
import { BLOBS_BUCKET, BLOB_CHUNK_BYTES, DEFAULT_MAX_BLOB_BYTES, DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_IDLE_MS, blobObjectName } from "./limits.js";
import { KvRoomAccess } from "./room-access.js";
import type { RoomAccess } from "./room-access.js";
import { UploadSession } from "./upload-session.js";

/** Encrypted blob bytes stored (in) and served (out); the bytes are ciphertext, their count is not secret. */
const blobBytes = defineCounter("unibus_blob_bytes_total", "Blob chunk bytes stored (in) and served (out)", ["direction"] as const);

/** What the blobs service needs beyond the kit's deps; every field has a default. */
export interface BlobsDeps extends KitDeps {
  /** Largest blob (ciphertext bytes) accepted; default 64 MiB (`UNIBUS_BLOBS_MAX_BYTES` in main). */
  maxBlobBytes?: number;
  /** Idle time after which an upload or download is abandoned; default 30 s. */
  sessionIdleMs?: number;
  /** Sessions held at once by this replica; default 128. */
  maxSessions?: number;
  /** The membership `members` bucket; bound lazily by name when absent. */
  membersBucket?: KV;
  /** The object store; opened (created if missing) when absent. */
  objectStore?: ObjectStore;
}

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

async function openObjectStore(nc: NatsConnection, replicas: number): Promise<ObjectStore> {
  // The object store digests every byte it writes and re-checks it on read;
  // its default SHA-256 is pure JavaScript (~45 MB/s here, a fifth of this
  // service's CPU in P9). node:crypto gives the same digests far faster.
  setSha256Backend("native");
  const store = await new Objm(jetstream(nc)).create(BLOBS_BUCKET, { storage: "file", replicas });
  // objm.create can swallow errors (docs/nats-notes.md): a store that cannot report
  // its status is not there, and the service must not start on it.
  await store.status();
  return store;
}

/**
 * Builds the blobs service definition. The chunk and end endpoints listen on
 * subjects suffixed with this replica's token: an upload's stream lives in one
 * replica's memory, so its chunks must reach that replica, not any member of
 * the queue group.
 */
export function blobsDefinition(
  replica: string,
  store: ObjectStore,
  access: RoomAccess,
  opts: Required<Pick<BlobsDeps, "maxBlobBytes" | "sessionIdleMs" | "maxSessions">>,
  logger?: Logger,
): { definition: ServiceDefinition; shutdown(): Promise<void> } {
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

  const definition = defineService({
    name: ServiceName.blobs,
    version: packageJson.version,
    description: "Content-addressed encrypted blobs in the object store",
    metadata: { replica },
    endpoints: {
      put_begin: endpoint({
        subject: Subjects.blobs.putBegin,
        request: "blobs.put.begin.request",
        reply: "blobs.put.begin.reply",
        mutates: true,
        access: Access.Signed,
        async handler(req, caller) {
          const { principal } = signed(caller);
          if (req.size > opts.maxBlobBytes) {
            throw new UnibusError(ErrorCode.PayloadTooLarge, ErrorReason.PayloadTooLarge, `blob exceeds ${opts.maxBlobBytes} bytes`, { details: { limit: opts.maxBlobBytes } });
          }
          if (!possibleCiphertextSize(req.size)) throw new UnibusError(ErrorCode.BadRequest, BlobsErrorReason.SizeMismatch, "size is not a possible ciphertext size");
          await access.requireMember(req.roomId, principal);
          capacity();
          const uploadId = sessionId();
          const u = new UploadSession(uploadId, principal, req.roomId, req.blobId, req.size, blobObjectName(req.roomId, req.blobId), store, opts.sessionIdleMs, (s) =>
            // Logged once the purge is done: an operator (and a test) sees an abandoned upload end.
            void dropUpload(s, "idle").then(() => logger?.info({ op: "put_begin", uploadId: s.uploadId }, "abandoned upload aborted after the idle time")),
          );
          uploads.set(uploadId, u);
          return { uploadId, replica, chunkBytes: BLOB_CHUNK_BYTES, maxBytes: opts.maxBlobBytes };
        },
      }),
      // Not `mutates`: a chunk's replay protection is the upload itself, which
      // accepts each index once and in order, so a nonce write per 64 KiB
      // chunk would buy nothing.
      put_chunk: endpoint({
        subject: `${Subjects.blobs.putChunk}.${replica}`,
        request: "blobs.put.chunk.request",
        reply: "blobs.put.chunk.reply",
        mutates: false,
        access: Access.Signed,
        binary: true,
        maxPayloadBytes: BLOB_CHUNK_BYTES + 1024,
        async handler(req, caller, ctx) {
          const u = ownUpload(req.uploadId, signed(caller).principal);
          const chunk = ctx.payload;
          if (req.index !== u.nextIndex || chunk.byteLength === 0 || chunk.byteLength > BLOB_CHUNK_BYTES) {
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
      put_end: endpoint({
        subject: `${Subjects.blobs.putEnd}.${replica}`,
        request: "blobs.put.end.request",
        reply: "blobs.put.end.reply",
        mutates: true,
        access: Access.Signed,
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
      get_begin: endpoint({
        subject: Subjects.blobs.getBegin,
        request: "blobs.get.begin.request",
        reply: "blobs.get.begin.reply",
        mutates: false,
        access: Access.Signed,
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
          const d = new DownloadSession(downloadId, principal, result.info.size, BLOB_CHUNK_BYTES, result, opts.sessionIdleMs, (s) => void dropDownload(s));
          downloads.set(downloadId, d);
          return { downloadId, replica, size: result.info.size, chunkBytes: BLOB_CHUNK_BYTES };
        },
      }),
      get_chunk: endpoint({
        subject: `${Subjects.blobs.getChunk}.${replica}`,
        request: "blobs.get.chunk.request",
        reply: "blobs.get.chunk.reply",
        mutates: false,
        access: Access.Signed,
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
    },
  });

  return {
    definition,
    async shutdown() {
      await Promise.all([...uploads.values()].map((u) => dropUpload(u, "service stopping")));
      await Promise.all([...downloads.values()].map((d) => dropDownload(d)));
    },
  };
}

/**
 * Starts the blobs service on `nc`: opens (creates) the `blobs` object store,
 * binds the `members` bucket for room checks and registers the endpoints.
 */
export async function createBlobsService(nc: NatsConnection, deps: BlobsDeps = {}): Promise<RunningService> {
  const logger = deps.logger ?? pino({ level: "info" });
  const store = deps.objectStore ?? (await openObjectStore(nc, deps.bucketReplicas ?? 1));
  // Room checks are leader reads: bounded, so a leaderless `members` is a coded 503, not a client timeout.
  const access = new KvRoomAccess(serviceJetStream(nc), deps.membersBucket);
  const replica = randomBytes(8).toString("hex");
  const built = blobsDefinition(replica, store, access, {
    maxBlobBytes: deps.maxBlobBytes ?? DEFAULT_MAX_BLOB_BYTES,
    sessionIdleMs: deps.sessionIdleMs ?? DEFAULT_SESSION_IDLE_MS,
    maxSessions: deps.maxSessions ?? DEFAULT_MAX_SESSIONS,
  }, logger.bindings()["svc"] === undefined ? logger.child({ svc: ServiceName.blobs }) : logger);
  const running = await startService(nc, built.definition, { ...deps, logger });
  return {
    ...running,
    async stop() {
      await running.stop();
      // Sessions still open are abandoned transfers: aborting makes the
      // object store purge their chunks, so nothing half-written remains.
      await built.shutdown();
    },
  };
}
