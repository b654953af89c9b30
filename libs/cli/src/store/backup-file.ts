import { hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { aeadDecrypt, aeadEncrypt } from "@unibus/crypto";
import { CliError } from "../errors.js";

/**
 * The encrypted backup file. JetStream snapshots carry stream data in the
 * clear (the server decrypts while it snapshots), so a backup file must be
 * encrypted itself, or whoever reads the file reads every stream.
 *
 * Layout: a header `magic(8) || version(1) || salt(32) || noncePrefix(15) ||
 * keyCheck(32)`, then chunks `u32be length || XChaCha20-Poly1305(frame)`. The
 * key and the check value come from HKDF-SHA256 over the key material with
 * the header's salt. Each chunk's nonce is `noncePrefix || u64be counter ||
 * finalFlag`, and its associated data is the whole header: a reordered,
 * dropped, spliced or truncated chunk fails authentication, and only the
 * last chunk may carry the final flag, so a file cut after any chunk is
 * refused rather than restored in part.
 */
const MAGIC = Buffer.from("UNIBUSBK", "latin1");
const VERSION = 1;
const SALT_LEN = 32;
const PREFIX_LEN = 15;
const CHECK_LEN = 32;
const HEADER_LEN = MAGIC.length + 1 + SALT_LEN + PREFIX_LEN + CHECK_LEN;
const TAG_LEN = 16;
/** Largest frame payload a writer emits; a reader refuses longer chunks (a damaged length must not allocate gigabytes). */
export const MAX_FRAME_PAYLOAD = 1024 * 1024;
const MAX_CHUNK = 1 + MAX_FRAME_PAYLOAD + TAG_LEN;
const HKDF_INFO = "unibus store backup v1";

/** Kinds of frame inside a backup. */
export const FrameType = {
  /** Start of a stream: JSON `{ config, state, digest }`. */
  streamStart: 0x53,
  /** A piece of the stream's snapshot archive. */
  data: 0x44,
  /** End of a stream's snapshot. */
  streamEnd: 0x45,
  /** End of the backup: JSON summary; only this frame is final. */
  end: 0x5a,
} as const;
/** One of the {@link FrameType} values. */
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** One decrypted frame. */
export interface BackupFrame {
  readonly type: FrameType;
  readonly payload: Buffer;
}

/** Why a backup file was refused. */
export const BackupErrorCode = {
  /** The key material does not match the file's key check. */
  wrongKey: "wrong_key",
  /** A chunk failed authentication, or the layout is broken. */
  damaged: "damaged",
  /** The file ends before its final chunk. */
  truncated: "truncated",
  /** Not a unibus backup (magic or version). */
  format: "format",
} as const;
/** One of the {@link BackupErrorCode} values. */
export type BackupErrorCode = (typeof BackupErrorCode)[keyof typeof BackupErrorCode];

/** A backup file that cannot be trusted, with a stable code. */
export class BackupFileError extends CliError {
  readonly code: BackupErrorCode;

  constructor(code: BackupErrorCode, message: string) {
    super(message);
    this.name = "BackupFileError";
    this.code = code;
  }
}

function deriveKeys(material: Uint8Array, salt: Uint8Array): { key: Uint8Array; check: Uint8Array } {
  const okm = new Uint8Array(hkdfSync("sha256", material, salt, HKDF_INFO, 32 + CHECK_LEN));
  return { key: okm.subarray(0, 32), check: okm.subarray(32) };
}

function nonceFor(prefix: Uint8Array, counter: bigint, final: boolean): Uint8Array {
  const nonce = Buffer.alloc(24);
  Buffer.from(prefix).copy(nonce, 0);
  nonce.writeBigUInt64BE(counter, PREFIX_LEN);
  nonce[23] = final ? 1 : 0;
  return nonce;
}

/** Writes a backup to a temp file beside `path` (0600) and renames it into place on {@link finish}. */
export class BackupWriter {
  private counter = 0n;
  private done = false;

  private constructor(
    private readonly fh: FileHandle,
    private readonly tmp: string,
    private readonly path: string,
    private readonly key: Uint8Array,
    private readonly header: Buffer,
    private readonly prefix: Uint8Array,
  ) {}

  /** Opens a new backup at `path`; an existing file there is never overwritten. */
  static async create(path: string, material: Uint8Array): Promise<BackupWriter> {
    const salt = randomBytes(SALT_LEN);
    const prefix = randomBytes(PREFIX_LEN);
    const { key, check } = deriveKeys(material, salt);
    const header = Buffer.concat([MAGIC, Buffer.from([VERSION]), salt, prefix, check]);
    try {
      const st = await open(path, "r");
      await st.close();
      throw new CliError(`${path} exists; choose a new file name (a backup never overwrites a file)`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.partial`);
    const fh = await open(tmp, "wx", 0o600);
    await fh.write(header);
    return new BackupWriter(fh, tmp, path, key, header, prefix);
  }

  /** Appends one frame. */
  async frame(type: FrameType, payload: Uint8Array, final = false): Promise<void> {
    if (this.done) throw new Error("backup already finished");
    if (payload.byteLength > MAX_FRAME_PAYLOAD) throw new RangeError("backup frame too large");
    const plain = Buffer.concat([Buffer.from([type]), payload]);
    const sealed = aeadEncrypt(this.key, nonceFor(this.prefix, this.counter++, final), plain, this.header);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(sealed.byteLength);
    await this.fh.write(Buffer.concat([len, sealed]));
  }

  /** Writes the final frame, syncs and renames the file into place. */
  async finish(summary: unknown): Promise<void> {
    await this.frame(FrameType.end, Buffer.from(JSON.stringify(summary)), true);
    this.done = true;
    this.key.fill(0);
    await this.fh.sync();
    await this.fh.close();
    await rename(this.tmp, this.path);
  }

  /** Removes the partial file (after a failure). */
  async abort(): Promise<void> {
    this.done = true;
    this.key.fill(0);
    await this.fh.close().catch(() => undefined);
    await rm(this.tmp, { force: true });
  }
}

async function readExactly(fh: FileHandle, length: number, position: number): Promise<Buffer | undefined> {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) return got === 0 ? undefined : buf.subarray(0, got);
    got += bytesRead;
  }
  return buf;
}

/**
 * Reads and authenticates a backup frame by frame. Frames are yielded only
 * after their chunk authenticated; a caller that must not act on a partly
 * good file reads it through once first (see {@link verifyBackupFile}).
 *
 * @throws BackupFileError for a wrong key, a damaged or a truncated file.
 */
export async function* readBackupFile(path: string, material: Uint8Array): AsyncGenerator<BackupFrame> {
  const fh = await open(path, "r");
  try {
    const header = await readExactly(fh, HEADER_LEN, 0);
    if (header === undefined || header.length < HEADER_LEN || !header.subarray(0, MAGIC.length).equals(MAGIC)) {
      throw new BackupFileError(BackupErrorCode.format, `${path} is not a unibus backup file`);
    }
    if (header[MAGIC.length] !== VERSION) throw new BackupFileError(BackupErrorCode.format, `${path}: unsupported backup version ${header[MAGIC.length]}`);
    let offset = MAGIC.length + 1;
    const salt = header.subarray(offset, (offset += SALT_LEN));
    const prefix = header.subarray(offset, (offset += PREFIX_LEN));
    const check = header.subarray(offset, (offset += CHECK_LEN));
    const keys = deriveKeys(material, salt);
    try {
      if (!timingSafeEqual(keys.check, check)) {
        throw new BackupFileError(BackupErrorCode.wrongKey, `${path}: wrong backup key (this file was made with another key); nothing was changed`);
      }
      let position = HEADER_LEN;
      let counter = 0n;
      for (;;) {
        const lenBuf = await readExactly(fh, 4, position);
        if (lenBuf === undefined || lenBuf.length < 4) {
          throw new BackupFileError(BackupErrorCode.truncated, `${path} is truncated (no final chunk); nothing was changed`);
        }
        const len = lenBuf.readUInt32BE(0);
        if (len < 1 + TAG_LEN || len > MAX_CHUNK) throw new BackupFileError(BackupErrorCode.damaged, `${path} is damaged (bad chunk length); nothing was changed`);
        const sealed = await readExactly(fh, len, position + 4);
        if (sealed === undefined || sealed.length < len) {
          throw new BackupFileError(BackupErrorCode.truncated, `${path} is truncated (no final chunk); nothing was changed`);
        }
        position += 4 + len;
        const atEnd = (await readExactly(fh, 1, position)) === undefined;
        // Only the last chunk in the file may be final; try the flag the position implies.
        let plain: Uint8Array;
        try {
          plain = aeadDecrypt(keys.key, nonceFor(prefix, counter, atEnd), sealed, header);
        } catch {
          throw new BackupFileError(
            BackupErrorCode.damaged,
            atEnd
              ? `${path} is damaged or truncated (its last chunk does not authenticate as the final one); nothing was changed`
              : `${path} is damaged (chunk ${counter} does not authenticate); nothing was changed`,
          );
        }
        counter++;
        const type = plain[0] as FrameType;
        if (!Object.values(FrameType).includes(type) || (type === FrameType.end) !== atEnd) {
          throw new BackupFileError(BackupErrorCode.damaged, `${path} is damaged (unexpected frame); nothing was changed`);
        }
        yield { type, payload: Buffer.from(plain.subarray(1)) };
        if (atEnd) return;
      }
    } finally {
      keys.key.fill(0);
    }
  } finally {
    await fh.close();
  }
}

/** Authenticates the whole file without acting on it; returns the final summary frame's JSON. */
export async function verifyBackupFile(path: string, material: Uint8Array): Promise<unknown> {
  let summary: unknown;
  for await (const frame of readBackupFile(path, material)) {
    if (frame.type === FrameType.end) summary = JSON.parse(frame.payload.toString("utf8"));
  }
  return summary;
}
