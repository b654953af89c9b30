import { open, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { CliError } from "../errors.js";
import { ensurePrivateDir } from "../home.js";
import type { HomeLayout } from "../home.js";
import { fileExists, generateJetStreamKey, isValidJetStreamKey } from "../up/provision.js";
import { BackupWriter, FrameType, MAX_FRAME_PAYLOAD, readBackupFile, verifyBackupFile } from "./backup-file.js";
import {
  assertAllStreamsLoaded,
  assertSameDigests,
  beginRestore,
  digestAll,
  digestStream,
  plaintextStreams,
  snapshotStream,
  startMaintenanceServer,
  streamDirs,
} from "./maintenance.js";
import type { MaintenanceServer, SnapshotMeta, StoreKeys, StreamDigest, StreamRestore } from "./maintenance.js";

/** Where a store operation runs and reports. */
export interface StoreContext {
  readonly home: HomeLayout;
  readonly bin: string;
  readonly say: (line: string) => void;
}

/** Suffix of the new key while a rotation is under way: its presence means "finish the rotation". */
export const NEXT_KEY_SUFFIX = ".next";

/** Paths used while a store is copied: the new store is built beside the live one and swapped in. */
function scratch(home: HomeLayout): { next: string; old: string; work: string } {
  return { next: `${home.jetstreamDir}.new`, old: `${home.jetstreamDir}.old`, work: join(home.root, "store-maintenance") };
}

/** Reads a secret key file: owner-only, one line. */
export async function readKeyFile(path: string, label: string, minLength = 32): Promise<string> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new CliError(`${label} ${path} does not exist`);
    throw err;
  }
  try {
    const st = await fh.stat();
    if ((st.mode & 0o077) !== 0) throw new CliError(`${label} ${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}): run \`chmod 600 ${path}\``);
    const key = (await fh.readFile("utf8")).trim();
    if (key.length < minLength || /\s/.test(key)) throw new CliError(`${label} ${path} is damaged (expected one line of at least ${minLength} characters)`);
    return key;
  } finally {
    await fh.close();
  }
}

/** Writes a new key file 0600, never over an existing one, synced before anything depends on it. */
export async function writeNewKeyFile(path: string, key: string): Promise<void> {
  const fh = await open(path, "wx", 0o600);
  try {
    await fh.writeFile(`${key}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function readJetStreamKey(home: HomeLayout, path = home.jetstreamKeyFile): Promise<string> {
  const key = await readKeyFile(path, "JetStream key file");
  if (!isValidJetStreamKey(key)) throw new CliError(`JetStream key file ${path} is damaged (expected a letter then 31+ letters/digits)`);
  return key;
}

async function withServer<T>(ctx: StoreContext, storeDir: string, name: string, keys: StoreKeys, fn: (m: MaintenanceServer) => Promise<T>): Promise<T> {
  const m = await startMaintenanceServer({ bin: ctx.bin, storeDir, workDir: join(scratch(ctx.home).work, name), keys });
  try {
    return await fn(m);
  } finally {
    await m.stop();
  }
}

function summarize(digests: ReadonlyMap<string, StreamDigest>): string {
  let messages = 0;
  for (const d of digests.values()) messages += d.messages;
  return `${digests.size} streams, ${messages} messages`;
}

/** Puts back a store that an interrupted copy left beside the live one, and removes leftovers. */
async function recoverSwap(home: HomeLayout): Promise<void> {
  const s = scratch(home);
  if (!(await fileExists(home.jetstreamDir)) && (await fileExists(s.old))) await rename(s.old, home.jetstreamDir);
  await rm(s.next, { recursive: true, force: true });
  await rm(s.old, { recursive: true, force: true });
}

/** Replaces the live store with the verified copy in `next`, then deletes the old store. */
async function swapIn(home: HomeLayout, afterSwap?: () => Promise<void>): Promise<void> {
  const s = scratch(home);
  if (await fileExists(home.jetstreamDir)) await rename(home.jetstreamDir, s.old);
  await rename(s.next, home.jetstreamDir);
  await afterSwap?.();
  await rm(s.old, { recursive: true, force: true });
  await rm(s.work, { recursive: true, force: true });
}

async function copyStream(src: MaintenanceServer, dst: MaintenanceServer, stream: string): Promise<void> {
  let restore: StreamRestore | undefined;
  await snapshotStream(
    src.nc,
    stream,
    async (meta) => {
      restore = await beginRestore(dst.nc, meta);
    },
    async (chunk) => {
      await restore!.chunk(chunk);
    },
  );
  await restore!.finish();
}

/**
 * Copies every stream (data and consumers) of the live store, opened with
 * `from`, into a new store beside it written under `toKey`, and checks the
 * copy against the original (counts, a hash of every message, consumer
 * positions). The caller swaps it in.
 */
async function copyStore(ctx: StoreContext, from: StoreKeys, toKey: string, label: string): Promise<Map<string, StreamDigest>> {
  const { home } = ctx;
  const s = scratch(home);
  await rm(s.next, { recursive: true, force: true });
  await ensurePrivateDir(s.next);
  try {
    return await withServer(ctx, home.jetstreamDir, `${label}-src`, from, async (src) => {
      const streams = await assertAllStreamsLoaded(src, home.jetstreamDir, "the current key");
      const before = await digestAll(src.nc, streams);
      return withServer(ctx, s.next, `${label}-dst`, { key: toKey }, async (dst) => {
        for (const stream of streams) await copyStream(src, dst, stream);
        const after = await digestAll(dst.nc, streams);
        assertSameDigests(before, after, "the copy");
        return after;
      });
    });
  } catch (err) {
    await rm(s.next, { recursive: true, force: true });
    throw err;
  }
}

/** True when `key` opens every stream of the live store. */
async function opensStore(ctx: StoreContext, key: string, label: string): Promise<boolean> {
  return withServer(ctx, ctx.home.jetstreamDir, label, { key }, async (m) => {
    try {
      await assertAllStreamsLoaded(m, ctx.home.jetstreamDir, "the key");
      return true;
    } catch (err) {
      if (err instanceof CliError) return false;
      throw err;
    }
  });
}

/**
 * Rotates the at-rest key by copying the store under a new key. nats-server's
 * `prev_key` is not enough (verified on 2.15.1): started with a new key and
 * `prev_key`, it re-encrypts stream metadata and message blocks, but fails to
 * open consumer files ("message authentication failed") and drops every
 * durable consumer. A snapshot/restore copy re-writes streams and consumers
 * under the new key, and the old store files are deleted after the swap.
 *
 * The new key is written to `jetstream.key.next` before anything else, so an
 * interrupted rotation is finished by running the command again: whichever of
 * the two keys opens the live store tells how far it got.
 */
export async function rotateKey(ctx: StoreContext): Promise<{ streams: number; messages: number; resumed: boolean }> {
  const { home, say } = ctx;
  const oldKey = await readJetStreamKey(home);
  const nextPath = home.jetstreamKeyFile + NEXT_KEY_SUFFIX;
  const resumed = await fileExists(nextPath);
  let newKey: string;
  if (resumed) {
    newKey = await readJetStreamKey(home, nextPath);
    say(`finishing an interrupted rotation (${nextPath} exists)`);
    await recoverSwap(home);
    if (!(await opensStore(ctx, oldKey, "rotate-probe-old"))) {
      if (!(await opensStore(ctx, newKey, "rotate-probe-new"))) {
        throw new CliError(`neither ${home.jetstreamKeyFile} nor ${nextPath} opens every stream; nothing was changed`);
      }
      // The copy was already swapped in: only the key file is left to replace.
      await rename(nextPath, home.jetstreamKeyFile);
      await rm(scratch(home).work, { recursive: true, force: true });
      say("the store was already re-encrypted; the new key is now in place");
      return { streams: (await streamDirs(home.jetstreamDir)).length, messages: 0, resumed };
    }
  } else {
    newKey = generateJetStreamKey();
    await writeNewKeyFile(nextPath, newKey);
  }
  let copied: Map<string, StreamDigest>;
  try {
    copied = await copyStore(ctx, { key: oldKey }, newKey, "rotate");
  } catch (err) {
    // The live store is untouched and still under the old key: nothing to finish later.
    await rm(nextPath, { force: true });
    throw err;
  }
  await swapIn(home, async () => {
    // The old key is dropped here: rename replaces it atomically.
    await rename(nextPath, home.jetstreamKeyFile);
  });
  let messages = 0;
  for (const d of copied.values()) messages += d.messages;
  say(`re-encrypted ${summarize(copied)} under a new key; the previous key and store files are deleted`);
  return { streams: copied.size, messages, resumed };
}

/**
 * Migrates a plaintext (or partly plaintext) store to an encrypted one: the
 * store is copied under the key ({@link copyStore}), checked, and swapped in;
 * the old store files are then deleted.
 */
export async function encryptStore(ctx: StoreContext): Promise<{ streams: number; messages: number }> {
  const { home, say } = ctx;
  await recoverSwap(home);
  const all = await streamDirs(home.jetstreamDir);
  if (all.length === 0) {
    say("the store is empty: nothing to encrypt");
    return { streams: 0, messages: 0 };
  }
  // No meta.key means the stream was written without a cipher. Its presence
  // does not prove the blocks are encrypted: nats-server 2.15.1 started with
  // a key usually converts a plaintext stream ("Encrypting stream" in its
  // log), but one of our runs kept a plaintext block beside the new key
  // files, and its docs say old blocks stay as they are. So every stream is
  // copied under the key and the copy is what is kept.
  const plain = await plaintextStreams(home.jetstreamDir);
  const whollyPlain = plain.length === all.length;
  say(`${all.length} streams, ${plain.length} without at-rest encryption; copying all of them under the key`);
  let key: string;
  if (await fileExists(home.jetstreamKeyFile)) {
    key = await readJetStreamKey(home);
  } else {
    // Only a wholly plaintext store may get a fresh key: an encrypted stream needs the key it was written with.
    if (!whollyPlain) throw new CliError(`${home.jetstreamKeyFile} is missing but some streams are encrypted: restore the key file first`);
    await ensurePrivateDir(home.secretsDir);
    key = generateJetStreamKey();
    await writeNewKeyFile(home.jetstreamKeyFile, key);
    say(`created the JetStream key ${home.jetstreamKeyFile} (back it up: without it the data is unreadable)`);
  }
  // A wholly plaintext store is read without a cipher, so a failed copy leaves it exactly as it was.
  const result = await copyStore(ctx, whollyPlain ? {} : { key }, key, "encrypt");
  const stillPlain = await plaintextStreams(scratch(home).next);
  if (stillPlain.length > 0) throw new CliError(`the copy still has plaintext streams (${stillPlain.join(", ")}); the original store is unchanged`);
  await swapIn(home);
  let messages = 0;
  for (const d of result.values()) messages += d.messages;
  say(`encrypted ${summarize(result)}; the old store files are deleted`);
  return { streams: result.size, messages };
}

interface StreamHeader {
  readonly meta: SnapshotMeta;
  readonly digest: StreamDigest;
}

/** Writes every stream's snapshot (with consumers) to an encrypted backup file. */
export async function backupStore(ctx: StoreContext, file: string, backupKey: string): Promise<{ streams: number; messages: number }> {
  const { home, say } = ctx;
  const key = await readJetStreamKey(home);
  const writer = await BackupWriter.create(file, Buffer.from(backupKey, "utf8"));
  try {
    const digests = await withServer(ctx, home.jetstreamDir, "backup", { key }, async (m) => {
      const streams = await assertAllStreamsLoaded(m, home.jetstreamDir, "the JetStream key");
      const out = new Map<string, StreamDigest>();
      for (const stream of streams) {
        const digest = await digestStream(m.nc, stream);
        out.set(stream, digest);
        await snapshotStream(
          m.nc,
          stream,
          (meta) => writer.frame(FrameType.streamStart, Buffer.from(JSON.stringify({ meta, digest } satisfies StreamHeader))),
          async (chunk) => {
            for (let i = 0; i < chunk.length; i += MAX_FRAME_PAYLOAD) await writer.frame(FrameType.data, chunk.subarray(i, i + MAX_FRAME_PAYLOAD));
          },
        );
        await writer.frame(FrameType.streamEnd, Buffer.alloc(0));
      }
      return out;
    });
    await writer.finish({ streams: digests.size, created: new Date().toISOString() });
    await rm(scratch(home).work, { recursive: true, force: true });
    say(`backed up ${summarize(digests)} to ${file}`);
    let messages = 0;
    for (const d of digests.values()) messages += d.messages;
    return { streams: digests.size, messages };
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/**
 * Restores a backup into a new store and swaps it in. The whole file is
 * authenticated first: a wrong key or a damaged file fails before any store
 * is touched. Each stream is then checked against the digest the backup
 * recorded, and the live store is replaced only when all match.
 */
export async function restoreStore(ctx: StoreContext, file: string, backupKey: string, replace: boolean): Promise<{ streams: number; messages: number }> {
  const { home, say } = ctx;
  const material = Buffer.from(backupKey, "utf8");
  await verifyBackupFile(file, material);
  say(`${file}: authenticated`);
  await recoverSwap(home);
  const existing = await streamDirs(home.jetstreamDir);
  if (existing.length > 0 && !replace) {
    throw new CliError(`${home.jetstreamDir} holds ${existing.length} streams; pass --replace to replace them with the backup (nothing was changed)`);
  }
  let key: string;
  if (await fileExists(home.jetstreamKeyFile)) {
    key = await readJetStreamKey(home);
  } else {
    if (existing.length > 0) throw new CliError(`${home.jetstreamKeyFile} is missing next to existing data; restore the key file first`);
    await ensurePrivateDir(home.secretsDir);
    key = generateJetStreamKey();
    await writeNewKeyFile(home.jetstreamKeyFile, key);
    say(`created the JetStream key ${home.jetstreamKeyFile} (back it up: without it the data is unreadable)`);
  }
  const s = scratch(home);
  await ensurePrivateDir(home.root);
  await ensurePrivateDir(s.next);
  const restored = await withServer(ctx, s.next, "restore", { key }, async (m) => {
    const out = new Map<string, StreamDigest>();
    let current: { header: StreamHeader; restore: StreamRestore } | undefined;
    for await (const frame of readBackupFile(file, material)) {
      if (frame.type === FrameType.streamStart) {
        if (current !== undefined) throw new CliError(`${file}: stream ${current.header.meta.config.name} has no end`);
        const header = JSON.parse(frame.payload.toString("utf8")) as StreamHeader;
        current = { header, restore: await beginRestore(m.nc, header.meta) };
      } else if (frame.type === FrameType.data) {
        if (current === undefined) throw new CliError(`${file}: data outside a stream`);
        await current.restore.chunk(frame.payload);
      } else if (frame.type === FrameType.streamEnd) {
        if (current === undefined) throw new CliError(`${file}: stream end outside a stream`);
        await current.restore.finish();
        const name = current.header.meta.config.name;
        const digest = await digestStream(m.nc, name);
        assertSameDigests(new Map([[name, current.header.digest]]), new Map([[name, digest]]), "restored stream");
        out.set(name, digest);
        current = undefined;
      }
    }
    return out;
  }).catch(async (err: unknown) => {
    await rm(s.next, { recursive: true, force: true });
    throw err;
  });
  await swapIn(home);
  say(`restored ${summarize(restored)} from ${file}`);
  let messages = 0;
  for (const d of restored.values()) messages += d.messages;
  return { streams: restored.size, messages };
}

/** True when the store dir has anything in it. */
export async function storeHasData(home: HomeLayout): Promise<boolean> {
  try {
    return (await readdir(home.jetstreamDir)).length > 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}
