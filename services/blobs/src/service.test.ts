import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createInbox, headers as natsHeaders } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import type { ObjectStore } from "@nats-io/obj";
import { pino } from "pino";
import { ErrorCode, ErrorReason, Subjects, UnibusError, decodeBinaryFrame, decodeReply, encodeBinaryFrame, replyError } from "@unibus/contracts";
import type { BlobsGetBeginReply, BlobsPutBeginReply } from "@unibus/contracts";
import { EnvelopeHeader, SigningKey, envelopeToHeaders, signEnvelope } from "@unibus/crypto";
import type { RunningService } from "@unibus/kit";
import { BlobIntegrityError, connect, getBlob, putBlob } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { eventually, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import packageJson from "../package.json" with { type: "json" };
import { BLOB_CHUNK_BYTES, blobObjectName, wireChunkBytes } from "./limits.js";
import { createBlobsService } from "./service.js";

const LIMIT = 4 * 1024 * 1024;
/** Plaintext bytes of one wire chunk on this test server (1 MiB max_payload): 15 sealed chunks. */
const WIRE_PLAIN = 15 * 64 * 1024;
const ROOM = "roomalpha1";
const OTHER_ROOM = "roombravo22";
const MARKER = "PLAINTEXT-MARKER-7f3c9e1d-unibus-blob";

let server: TestServer;
let nc: NatsConnection;
let running: RunningService;
let members: KV;
let store: ObjectStore;
const alice = SigningKey.generate();
const mallory = SigningKey.generate();
let aliceClient: UnibusClient;
let malloryClient: UnibusClient;

function plaintext(bytes: number): Uint8Array {
  // Repeating a marker makes a leaked plaintext chunk easy to find on disk.
  const marker = new TextEncoder().encode(MARKER);
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = marker[i % marker.length] ?? 0;
  return out;
}

async function roomObjects(roomId: string): Promise<string[]> {
  return (await store.list()).filter((o) => o.name.startsWith(`${roomId}/`) && !o.deleted).map((o) => o.name);
}

async function chunkMessages(): Promise<number> {
  const info = await (await jetstreamManager(nc)).streams.info("OBJ_blobs", { subjects_filter: "$O.blobs.C.>" });
  return Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
}

async function errorOf(p: Promise<unknown>): Promise<UnibusError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof UnibusError)) throw new Error(`expected a UnibusError, got ${String(err)}`);
  return err;
}

/** A signed request with a raw body, for protocol-level tests the SDK never sends. */
async function raw(subject: string, data: Uint8Array, opts: { key?: SigningKey; signed?: Uint8Array; unsigned?: boolean; envelope?: Record<string, string> } = {}) {
  const h = natsHeaders();
  const env = opts.envelope ?? envelopeToHeaders(signEnvelope(opts.key ?? alice, subject, opts.signed ?? data));
  // Unsigned: only the claimed signer, so the kit answers 401 to that signer's inbox.
  if (opts.unsigned !== true) for (const [n, v] of Object.entries(env)) h.set(n, v);
  else h.set(EnvelopeHeader.signer, (opts.key ?? alice).principal);
  // The kit answers only the claimed signer's own inbox.
  const reply = createInbox(`_INBOX.${h.get(EnvelopeHeader.signer)}`);
  return { msg: await nc.request(subject, data, { headers: h, timeout: 5_000, noMux: true, reply }), env };
}
const json = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));
/** The JSON part of a binary endpoint's reply. */
function frameReply(msg: { data: Uint8Array }): unknown {
  const frame = decodeBinaryFrame(msg.data);
  if (frame === null) throw new Error("reply is not a binary frame");
  return JSON.parse(new TextDecoder().decode(frame.json));
}
function rawError(msg: { data: Uint8Array; headers?: { get(n: string): string } | undefined }): UnibusError {
  const err = replyError(msg);
  if (err === null) throw new Error("expected an error reply");
  return err;
}

const logLines: string[] = [];

/** A `members` record as membership writes it: readers refuse anything else as damaged. */
function memberRecord(roomId: string, principal: string): string {
  return JSON.stringify({ roomId, principal, role: "owner", addedAt: new Date().toISOString(), addedBy: principal });
}

beforeAll(async () => {
  server = await startTestServer({ jetstream: true });
  nc = await server.connect();
  members = await new Kvm(jetstream(nc)).create("members");
  await members.put(`${ROOM}.${alice.principal}`, memberRecord(ROOM, alice.principal));
  await members.put(`${OTHER_ROOM}.${mallory.principal}`, memberRecord(OTHER_ROOM, mallory.principal));
  // Info lines are kept: the idle abort is observed through its log line.
  running = await createBlobsService(nc, { logger: pino({ level: "info" }, { write: (line: string) => void logLines.push(line) }), maxBlobBytes: LIMIT, sessionIdleMs: 1_000 });
  store = await new Objm(jetstream(nc)).open("blobs");
  aliceClient = await connect({ url: server.url, identity: alice });
  malloryClient = await connect({ url: server.url, identity: mallory });
});

afterAll(async () => {
  await aliceClient?.close();
  await malloryClient?.close();
  await running?.stop();
  await server?.stop();
});

it("registers as the blobs micro service, visible in $SRV.INFO with its package version", async () => {
  const info = (await nc.request("$SRV.INFO.blobs", undefined, { timeout: 5_000 })).json<Record<string, unknown>>();
  expect(info).toMatchObject({ type: "io.nats.micro.v1.info_response", name: "blobs", version: packageJson.version, id: running.id });
});

describe("round trip", () => {
  it("a member uploads a multi-chunk blob and reads it back byte for byte; the id is the SHA-256 of what is stored", async () => {
    // One full wire chunk (15 sealed chunks) and a second of 4.
    const data = plaintext(WIRE_PLAIN + 200 * 1024);
    const progress: number[] = [];
    const put = await putBlob(aliceClient, ROOM, data, { onProgress: (done) => progress.push(done) });
    expect(put).toMatchObject({ created: true, size: data.byteLength + 19 * 16 });
    expect(put.blobId).toMatch(/^[0-9a-f]{64}$/);
    expect(progress.at(-1)).toBe(put.size);
    expect(progress).toEqual([15 * BLOB_CHUNK_BYTES, put.size]);
    const stored = await store.getBlob(blobObjectName(ROOM, put.blobId));
    expect(stored).not.toBeNull();
    expect(createHash("sha256").update(stored ?? new Uint8Array()).digest("hex")).toBe(put.blobId);
    const back = await getBlob(aliceClient, ROOM, put.blobId, put.key);
    expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true);
  });

  it("an empty blob and a blob of exactly one chunk round-trip too", async () => {
    for (const size of [0, 64 * 1024]) {
      const data = plaintext(size);
      const put = await putBlob(aliceClient, ROOM, data);
      expect(Buffer.from(await getBlob(aliceClient, ROOM, put.blobId, put.key)).equals(Buffer.from(data))).toBe(true);
    }
  });

  it("pipelined transfers stay in order: a blob of more chunks than the window round-trips at every depth", async () => {
    const data = randomBytes(3 * WIRE_PLAIN + 777);
    for (const inFlight of [1, 2, 3, 64]) {
      const progress: number[] = [];
      const put = await putBlob(aliceClient, ROOM, data.slice(), { inFlight, onProgress: (done) => progress.push(done) });
      expect(progress).toHaveLength(4);
      expect(progress).toEqual([...progress].sort((a, b) => a - b));
      const got: number[] = [];
      const back = await getBlob(aliceClient, ROOM, put.blobId, put.key, { inFlight, onProgress: (done) => got.push(done) });
      expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true);
      expect(got.at(-1)).toBe(put.size);
      // The same bytes again: the stored copy is found, so each depth uploads new bytes next round.
      data[0] = (data[0] ?? 0) ^ 1;
    }
  });

  it("an inFlight outside 1–64 is a coded 400 before anything is sent", async () => {
    for (const inFlight of [0, 65, 1.5]) {
      await expect(putBlob(aliceClient, ROOM, plaintext(10), { inFlight })).rejects.toMatchObject({ code: ErrorCode.BadRequest, reason: ErrorReason.SchemaViolation });
      await expect(getBlob(aliceClient, ROOM, "ab".repeat(32), Buffer.alloc(32).toString("base64url"), { inFlight })).rejects.toMatchObject({ code: ErrorCode.BadRequest });
    }
  });

  it("a one-shot stream uploads like bytes", async () => {
    const data = plaintext(70 * 1024);
    async function* pieces() {
      yield data.subarray(0, 1000);
      yield data.subarray(1000);
    }
    const put = await putBlob(aliceClient, ROOM, pieces());
    expect(Buffer.from(await getBlob(aliceClient, ROOM, put.blobId, put.key)).equals(Buffer.from(data))).toBe(true);
  });

  it("the object store never holds the plaintext: the JetStream store dir contains no marker bytes", async () => {
    await putBlob(aliceClient, ROOM, plaintext(100 * 1024));
    const needle = Buffer.from(MARKER);
    const hits: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) await walk(p);
        else if ((await readFile(p)).includes(needle)) hits.push(p);
      }
    };
    await walk(server.dir);
    expect(hits).toEqual([]);
  });

  it("a download with the wrong key is rejected as an integrity failure, yielding nothing", async () => {
    const put = await putBlob(aliceClient, ROOM, plaintext(1000));
    const wrong = Buffer.alloc(32, 7).toString("base64url");
    await expect(getBlob(aliceClient, ROOM, put.blobId, wrong)).rejects.toBeInstanceOf(BlobIntegrityError);
  });
});

describe("integrity", () => {
  it("a chunk tampered on upload fails put.end with 400 hash_mismatch and nothing is stored", async () => {
    const put = await putBlob(aliceClient, ROOM, plaintext(10));
    const sealed = (await store.getBlob(blobObjectName(ROOM, put.blobId))) ?? new Uint8Array();
    // Same declared id and size, one flipped bit, and a different room so no copy exists there yet.
    await members.put(`roomcharlie.${alice.principal}`, memberRecord("roomcharlie", alice.principal));
    const begin = decodeReply<BlobsPutBeginReply>((await raw(Subjects.blobs.putBegin, json({ roomId: "roomcharlie", blobId: put.blobId, size: sealed.byteLength }))).msg);
    const tampered = sealed.slice();
    tampered[3] = (tampered[3] ?? 0) ^ 1;
    const chunkBefore = await chunkMessages();
    const sent = await raw(`${Subjects.blobs.putChunk}.${begin.replica}`, encodeBinaryFrame({ uploadId: begin.uploadId, index: 0 }, tampered));
    expect(frameReply(sent.msg)).toEqual({ received: sealed.byteLength });
    const end = await raw(`${Subjects.blobs.putEnd}.${begin.replica}`, json({ uploadId: begin.uploadId }));
    expect(rawError(end.msg)).toMatchObject({ code: ErrorCode.BadRequest, reason: "hash_mismatch" });
    expect(await roomObjects("roomcharlie")).toEqual([]);
    expect(await chunkMessages()).toBe(chunkBefore - 0);
  });

  it("a chunk tampered in the store is detected by the downloading client", async () => {
    const data = plaintext(150 * 1024);
    const put = await putBlob(aliceClient, ROOM, data);
    const name = blobObjectName(ROOM, put.blobId);
    const sealed = (await store.getBlob(name)) ?? new Uint8Array();
    const tampered = sealed.slice();
    const at = BLOB_CHUNK_BYTES + 5;
    tampered[at] = (tampered[at] ?? 0) ^ 0x80;
    await store.putBlob({ name }, tampered);
    const yielded: number[] = [];
    const err = await (async () => {
      const { streamBlob } = await import("@unibus/sdk");
      for await (const part of streamBlob(aliceClient, ROOM, put.blobId, put.key)) yielded.push(part.byteLength);
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlobIntegrityError);
    // The first chunk was authentic; the tampered second one never reached the caller.
    expect(yielded).toEqual([64 * 1024]);
  });
});

describe("limits", () => {
  it("a declared size over the limit is 413 at put.begin and nothing is stored", async () => {
    const before = await roomObjects(ROOM);
    const err = await errorOf(putBlob(aliceClient, ROOM, plaintext(LIMIT)));
    expect(err).toMatchObject({ code: ErrorCode.PayloadTooLarge, reason: ErrorReason.PayloadTooLarge });
    expect(await roomObjects(ROOM)).toEqual(before);
  });

  it("bytes beyond the declared size are 413, cancel the upload, and leave no chunks in the store", async () => {
    const begin = decodeReply<BlobsPutBeginReply>((await raw(Subjects.blobs.putBegin, json({ roomId: ROOM, blobId: "ab".repeat(32), size: 1000 }))).msg);
    const chunkBefore = await chunkMessages();
    const first = await raw(`${Subjects.blobs.putChunk}.${begin.replica}`, encodeBinaryFrame({ uploadId: begin.uploadId, index: 0 }, new Uint8Array(600)));
    expect(frameReply(first.msg)).toEqual({ received: 600 });
    const over = await raw(`${Subjects.blobs.putChunk}.${begin.replica}`, encodeBinaryFrame({ uploadId: begin.uploadId, index: 1 }, new Uint8Array(600)));
    expect(rawError(over.msg)).toMatchObject({ code: ErrorCode.PayloadTooLarge });
    const end = await raw(`${Subjects.blobs.putEnd}.${begin.replica}`, json({ uploadId: begin.uploadId }));
    expect(rawError(end.msg)).toMatchObject({ code: ErrorCode.NotFound, reason: "upload_unknown" });
    expect(await store.info(blobObjectName(ROOM, "ab".repeat(32)))).toBeNull();
    expect(await chunkMessages()).toBeLessThanOrEqual(chunkBefore);
  });

  it("a wire chunk is 15 sealed chunks under a 1 MiB max_payload; one byte more is 413 and cancels the upload", async () => {
    const wire = 15 * BLOB_CHUNK_BYTES;
    expect(wireChunkBytes(1024 * 1024)).toBe(wire);
    // A smaller server limit shrinks the chunk to what fits, never below one sealed chunk.
    expect(wireChunkBytes(512 * 1024)).toBe(7 * BLOB_CHUNK_BYTES);
    expect(wireChunkBytes(64 * 1024)).toBe(BLOB_CHUNK_BYTES);
    const got = decodeReply<BlobsGetBeginReply>((await raw(Subjects.blobs.getBegin, json({ roomId: ROOM, blobId: (await putBlob(aliceClient, ROOM, plaintext(10))).blobId }))).msg);
    expect(got.chunkBytes).toBe(wire);
    const blobId = "9a".repeat(32);
    const begin = decodeReply<BlobsPutBeginReply>((await raw(Subjects.blobs.putBegin, json({ roomId: ROOM, blobId, size: 3 * wire }))).msg);
    expect(begin.chunkBytes).toBe(wire);
    const subject = `${Subjects.blobs.putChunk}.${begin.replica}`;
    const chunkBefore = await chunkMessages();
    const full = await raw(subject, encodeBinaryFrame({ uploadId: begin.uploadId, index: 0 }, new Uint8Array(wire)));
    expect(frameReply(full.msg)).toEqual({ received: wire });
    // Within the frame limit (which leaves room for the JSON part) but over chunkBytes.
    const over = await raw(subject, encodeBinaryFrame({ uploadId: begin.uploadId, index: 1 }, new Uint8Array(wire + 1)));
    expect(rawError(over.msg)).toMatchObject({ code: ErrorCode.PayloadTooLarge, reason: ErrorReason.PayloadTooLarge, details: { limit: wire } });
    const end = await raw(`${Subjects.blobs.putEnd}.${begin.replica}`, json({ uploadId: begin.uploadId }));
    expect(rawError(end.msg)).toMatchObject({ code: ErrorCode.NotFound, reason: "upload_unknown" });
    expect(await store.info(blobObjectName(ROOM, blobId))).toBeNull();
    expect(await chunkMessages()).toBeLessThanOrEqual(chunkBefore);
  });

  it("an upload abandoned mid-way is aborted after the idle time: no object, chunks purged", async () => {
    const blobId = "cd".repeat(32);
    const begin = decodeReply<BlobsPutBeginReply>((await raw(Subjects.blobs.putBegin, json({ roomId: ROOM, blobId, size: BLOB_CHUNK_BYTES + 100 }))).msg);
    const chunkBefore = await chunkMessages();
    await raw(`${Subjects.blobs.putChunk}.${begin.replica}`, encodeBinaryFrame({ uploadId: begin.uploadId, index: 0 }, new Uint8Array(BLOB_CHUNK_BYTES)));
    // Wait for the abort itself (the service logs it once the purge is done), not for a guessed time.
    await eventually(() => logLines.filter((l) => l.includes(begin.uploadId) && l.includes("abandoned upload aborted")), (hits) => hits.length === 1, {
      timeoutMs: 10_000,
      what: "the idle abort of the upload",
    });
    const end = await raw(`${Subjects.blobs.putEnd}.${begin.replica}`, json({ uploadId: begin.uploadId }));
    expect(rawError(end.msg)).toMatchObject({ code: ErrorCode.NotFound });
    expect(await store.info(blobObjectName(ROOM, blobId))).toBeNull();
    expect(await chunkMessages()).toBe(chunkBefore);
  });
});

describe("room access", () => {
  it("a non-member can neither upload to nor read from a room: 403", async () => {
    const put = await putBlob(aliceClient, ROOM, plaintext(100));
    expect(await errorOf(putBlob(malloryClient, ROOM, plaintext(100)))).toMatchObject({ code: ErrorCode.Forbidden });
    expect(await errorOf(getBlob(malloryClient, ROOM, put.blobId, put.key))).toMatchObject({ code: ErrorCode.Forbidden });
  });

  it("a blob is scoped to its room: a member of another room cannot fetch it by id from there (404)", async () => {
    const put = await putBlob(aliceClient, ROOM, plaintext(100));
    expect(await errorOf(getBlob(malloryClient, OTHER_ROOM, put.blobId, put.key))).toMatchObject({ code: ErrorCode.NotFound, reason: "blob_not_found" });
  });

  it("another principal cannot send chunks into, or finish, someone else's upload", async () => {
    const begin = decodeReply<BlobsPutBeginReply>((await raw(Subjects.blobs.putBegin, json({ roomId: ROOM, blobId: "ef".repeat(32), size: 100 }))).msg);
    const chunk = await raw(`${Subjects.blobs.putChunk}.${begin.replica}`, encodeBinaryFrame({ uploadId: begin.uploadId, index: 0 }, new Uint8Array(100)), { key: mallory });
    expect(rawError(chunk.msg)).toMatchObject({ code: ErrorCode.NotFound, reason: "upload_unknown" });
    const end = await raw(`${Subjects.blobs.putEnd}.${begin.replica}`, json({ uploadId: begin.uploadId }), { key: mallory });
    expect(rawError(end.msg)).toMatchObject({ code: ErrorCode.NotFound, reason: "upload_unknown" });
  });
});

describe("bad input", () => {
  const replica = (): string => {
    const info = running.service.info() as { metadata?: Record<string, string> };
    return info.metadata?.["replica"] ?? "";
  };
  const subjects = (): Record<string, { subject: string; binary: boolean; valid: unknown }> => ({
    put_begin: { subject: Subjects.blobs.putBegin, binary: false, valid: { roomId: ROOM, blobId: "12".repeat(32), size: 100 } },
    put_chunk: { subject: `${Subjects.blobs.putChunk}.${replica()}`, binary: true, valid: { uploadId: "0".repeat(32), index: 0 } },
    put_end: { subject: `${Subjects.blobs.putEnd}.${replica()}`, binary: false, valid: { uploadId: "0".repeat(32) } },
    get_begin: { subject: Subjects.blobs.getBegin, binary: false, valid: { roomId: ROOM, blobId: "12".repeat(32) } },
    get_chunk: { subject: `${Subjects.blobs.getChunk}.${replica()}`, binary: true, valid: { downloadId: "0".repeat(32), index: 0 } },
  });
  const body = (binary: boolean, v: unknown): Uint8Array => (binary ? encodeBinaryFrame(v, new Uint8Array(1)) : json(v));

  for (const name of ["put_begin", "put_chunk", "put_end", "get_begin", "get_chunk"]) {
    it(`${name}: malformed body, schema violation, oversize, missing and bad signature are rejected with a clear error`, async () => {
      const s = subjects()[name];
      if (s === undefined) throw new Error(name);
      const objectsBefore = (await store.list()).length;
      const malformed = s.binary ? new Uint8Array([0, 0, 0, 9, 1]) : new TextEncoder().encode("{nope");
      expect(rawError((await raw(s.subject, malformed)).msg)).toMatchObject({ code: ErrorCode.BadRequest, reason: ErrorReason.MalformedJson });
      expect(rawError((await raw(s.subject, body(s.binary, { ...(s.valid as object), extra: 1 }))).msg)).toMatchObject({ code: ErrorCode.BadRequest, reason: ErrorReason.SchemaViolation });
      expect(rawError((await raw(s.subject, body(s.binary, { ...(s.valid as object), index: -1, size: 1, roomId: "UPPER" }))).msg)).toMatchObject({ code: ErrorCode.BadRequest });
      const big = s.binary ? encodeBinaryFrame(s.valid, new Uint8Array(wireChunkBytes(undefined) + 2048)) : json({ ...(s.valid as object), pad: "x".repeat(70 * 1024) });
      expect(rawError((await raw(s.subject, big)).msg)).toMatchObject({ code: ErrorCode.PayloadTooLarge });
      expect(rawError((await raw(s.subject, body(s.binary, s.valid), { unsigned: true })).msg)).toMatchObject({ code: ErrorCode.Unauthorized, reason: ErrorReason.SignatureMissing });
      expect(rawError((await raw(s.subject, body(s.binary, s.valid), { signed: json({ other: true }) })).msg)).toMatchObject({ code: ErrorCode.Unauthorized, reason: ErrorReason.SignatureInvalid });
      expect((await store.list()).length).toBe(objectsBefore);
    });
  }

  it("put_begin: the same signed request sent again gets the first reply (no second upload), and an impossible ciphertext size is 400", async () => {
    const first = await raw(Subjects.blobs.putBegin, json({ roomId: ROOM, blobId: "34".repeat(32), size: 100 }));
    const uploadId = decodeReply<BlobsPutBeginReply>(first.msg).uploadId;
    expect(uploadId).toMatch(/^[0-9a-f]{32}$/);
    const again = await raw(Subjects.blobs.putBegin, json({ roomId: ROOM, blobId: "34".repeat(32), size: 100 }), { envelope: first.env });
    expect(decodeReply<BlobsPutBeginReply>(again.msg).uploadId).toBe(uploadId);
    const odd = await raw(Subjects.blobs.putBegin, json({ roomId: ROOM, blobId: "34".repeat(32), size: BLOB_CHUNK_BYTES + 3 }));
    expect(rawError(odd.msg)).toMatchObject({ code: ErrorCode.BadRequest, reason: "size_mismatch" });
  });

  it("put_chunk: a replayed or out-of-order chunk is 400 and cancels the upload", async () => {
    const begin = decodeReply<BlobsPutBeginReply>((await raw(Subjects.blobs.putBegin, json({ roomId: ROOM, blobId: "56".repeat(32), size: 200 }))).msg);
    const subject = `${Subjects.blobs.putChunk}.${begin.replica}`;
    const first = await raw(subject, encodeBinaryFrame({ uploadId: begin.uploadId, index: 0 }, new Uint8Array(100)));
    expect(frameReply(first.msg)).toEqual({ received: 100 });
    const replay = await raw(subject, encodeBinaryFrame({ uploadId: begin.uploadId, index: 0 }, new Uint8Array(100)), { envelope: first.env });
    expect(rawError(replay.msg)).toMatchObject({ code: ErrorCode.BadRequest, reason: "chunk_out_of_order" });
    const after = await raw(subject, encodeBinaryFrame({ uploadId: begin.uploadId, index: 1 }, new Uint8Array(100)));
    expect(rawError(after.msg)).toMatchObject({ code: ErrorCode.NotFound, reason: "upload_unknown" });
  });

  it("put_end: short of the declared size is 400 size_mismatch with nothing stored; get_chunk out of order is 400", async () => {
    const blobId = "78".repeat(32);
    const begin = decodeReply<BlobsPutBeginReply>((await raw(Subjects.blobs.putBegin, json({ roomId: ROOM, blobId, size: 200 }))).msg);
    await raw(`${Subjects.blobs.putChunk}.${begin.replica}`, encodeBinaryFrame({ uploadId: begin.uploadId, index: 0 }, new Uint8Array(100)));
    const end = await raw(`${Subjects.blobs.putEnd}.${begin.replica}`, json({ uploadId: begin.uploadId }));
    expect(rawError(end.msg)).toMatchObject({ code: ErrorCode.BadRequest, reason: "size_mismatch" });
    expect(await store.info(blobObjectName(ROOM, blobId))).toBeNull();

    const put = await putBlob(aliceClient, ROOM, plaintext(100));
    const get = decodeReply<{ downloadId: string; replica: string }>((await raw(Subjects.blobs.getBegin, json({ roomId: ROOM, blobId: put.blobId }))).msg);
    const skip = await raw(`${Subjects.blobs.getChunk}.${get.replica}`, encodeBinaryFrame({ downloadId: get.downloadId, index: 3 }));
    expect(rawError(skip.msg)).toMatchObject({ code: ErrorCode.BadRequest, reason: "chunk_out_of_order" });
  });
});
