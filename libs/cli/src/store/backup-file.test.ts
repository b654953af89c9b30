import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BackupErrorCode, BackupFileError, BackupWriter, FrameType, readBackupFile, verifyBackupFile } from "./backup-file.js";

const KEY = Buffer.from("a backup key of at least thirty-two characters");
let tmp: string;
let file: string;

beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), "unibus-backup-file-"));
  file = join(tmp, "b.backup");
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function write(frames: number): Promise<void> {
  const w = await BackupWriter.create(file, KEY);
  await w.frame(FrameType.streamStart, Buffer.from('{"name":"S"}'));
  for (let i = 0; i < frames; i++) await w.frame(FrameType.data, Buffer.from(`secret payload ${i}`));
  await w.frame(FrameType.streamEnd, Buffer.alloc(0));
  await w.finish({ streams: 1 });
}

async function codeOf(path: string, key = KEY): Promise<string> {
  try {
    await verifyBackupFile(path, key);
    return "ok";
  } catch (err) {
    if (err instanceof BackupFileError) return err.code;
    throw err;
  }
}

/** Chunk boundaries: header is 88 bytes, then u32 length + sealed chunk. */
async function chunkOffsets(): Promise<number[]> {
  const bytes = await readFile(file);
  const out: number[] = [];
  for (let p = 88; p < bytes.length; p += 4 + bytes.readUInt32BE(p)) out.push(p);
  return out;
}

describe("backup file", () => {
  it("round-trips frames, 0600, with no plaintext in the file", async () => {
    await write(3);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await readFile(file)).includes("secret payload")).toBe(false);
    const frames = [];
    for await (const f of readBackupFile(file, KEY)) frames.push([f.type, f.payload.toString()]);
    expect(frames).toEqual([
      [FrameType.streamStart, '{"name":"S"}'],
      [FrameType.data, "secret payload 0"],
      [FrameType.data, "secret payload 1"],
      [FrameType.data, "secret payload 2"],
      [FrameType.streamEnd, ""],
      [FrameType.end, '{"streams":1}'],
    ]);
    expect(await verifyBackupFile(file, KEY)).toEqual({ streams: 1 });
  });

  it("never overwrites an existing file", async () => {
    await write(1);
    await expect(BackupWriter.create(file, KEY)).rejects.toThrow(/exists/);
  });

  it("refuses a wrong key, any flipped byte, a dropped, swapped or cut chunk", async () => {
    await write(3);
    const good = await readFile(file);
    expect(await codeOf(file, Buffer.from("another key of at least thirty-two characters"))).toBe(BackupErrorCode.wrongKey);
    const variant = async (bytes: Buffer): Promise<string> => {
      const p = join(tmp, `v-${Math.random()}`);
      await writeFile(p, bytes);
      return codeOf(p);
    };
    expect(await variant(Buffer.from("not a backup at all"))).toBe(BackupErrorCode.format);
    // Every byte after the magic: no flip goes unnoticed.
    for (let i = 8; i < good.length; i++) {
      const copy = Buffer.from(good);
      copy[i]! ^= 0x01;
      expect(await variant(copy), `byte ${i}`).not.toBe("ok");
    }
    const offsets = await chunkOffsets();
    expect(offsets).toHaveLength(6);
    const [, c1, c2, c3] = offsets as [number, number, number, number];
    // Dropping chunk 1, swapping chunks 1 and 2, cutting before the final chunk.
    expect(await variant(Buffer.concat([good.subarray(0, c1), good.subarray(c2)]))).toBe(BackupErrorCode.damaged);
    expect(await variant(Buffer.concat([good.subarray(0, c1), good.subarray(c2, c3), good.subarray(c1, c2), good.subarray(c3)]))).toBe(BackupErrorCode.damaged);
    expect(await variant(good.subarray(0, offsets[5]))).toBe(BackupErrorCode.damaged);
    expect(await variant(good.subarray(0, good.length - 3))).toBe(BackupErrorCode.truncated);
    expect(await variant(good)).toBe("ok");
  });
});
