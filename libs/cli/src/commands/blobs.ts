import { createReadStream } from "node:fs";
import { open, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { BlobIntegrityError, decodeBlobKey, putBlob, streamBlob } from "@unibus/sdk";
import type { BlobProgress } from "@unibus/sdk";
import { stringFlag } from "../args.js";
import { clientCommand, printJson } from "../client-command.js";
import { commandGroup } from "../command.js";
import type { Command } from "../command.js";
import { requestError } from "../connection.js";
import { CliError, ExitCode, UsageError } from "../errors.js";

const ROOM_ID = /^[a-z0-9]{8,32}$/;
const BLOB_ID = /^[0-9a-f]{64}$/;
/** Below this a transfer is over before a bar could help. */
const PROGRESS_MIN_BYTES = 1024 * 1024;

/**
 * A progress bar on stderr, only when stderr is a terminal: stdout carries the
 * result (and, for `put`, the secret key), so scripts piping it see no noise.
 */
function progressBar(label: string, total: number): { update: BlobProgress; done(): void } | undefined {
  if (process.stderr.isTTY !== true || total < PROGRESS_MIN_BYTES) return undefined;
  const width = 30;
  let last = -1;
  return {
    update(done, all) {
      const pct = Math.floor((done / Math.max(all, 1)) * 100);
      if (pct === last) return;
      last = pct;
      const filled = Math.round((pct / 100) * width);
      process.stderr.write(`\r${label} [${"#".repeat(filled)}${" ".repeat(width - filled)}] ${pct}% ${(done / 1048576).toFixed(1)}/${(all / 1048576).toFixed(1)} MiB`);
    },
    done() {
      process.stderr.write("\n");
    },
  };
}

function blobError(err: unknown): CliError {
  if (err instanceof CliError) return err;
  if (err instanceof BlobIntegrityError) return new CliError(`blob rejected: ${err.message} (wrong key, or the stored blob was altered)`, { cause: err });
  return requestError(err, "blobs");
}

const blobPut = clientCommand({
  name: "put",
  command: "blob put",
  summary: "encrypt a file and store it in a room",
  usage:
    "Usage: unibus blob put <roomId> <file> [--json]\n\n" +
    "Encrypts the file on this machine with a fresh random key and uploads only\n" +
    "ciphertext; the service checks its SHA-256 (the blob id) and your room\n" +
    "membership. Prints the blob id and the KEY on stdout. The key is the only\n" +
    "way to read the blob: it is secret, share it only inside an encrypted room\n" +
    "message, and do not paste it into logs or tickets. It is never written to\n" +
    "stderr, a file, or the command line of another process.",
  positionals: ["roomId", "file"],
  validate(_flags, positionals) {
    if (!ROOM_ID.test(positionals[0] ?? "")) throw new UsageError(`not a room id: ${positionals[0] ?? ""}`, "blob put");
  },
  async run({ client, positionals, json, io }) {
    const roomId = positionals[0] ?? "";
    const path = resolve(io.cwd, positionals[1] ?? "");
    let size: number;
    try {
      const st = await stat(path);
      if (!st.isFile()) throw new Error("not a regular file");
      size = st.size;
    } catch (err) {
      throw new CliError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
    const bar = progressBar(`upload ${basename(path)}`, size);
    try {
      // Re-openable: putBlob reads the file twice (hash, then send) instead of holding it in memory.
      const result = await putBlob(client, roomId, { open: () => createReadStream(path) as AsyncIterable<Uint8Array> }, bar === undefined ? {} : { onProgress: bar.update });
      bar?.done();
      if (json) return printJson(io, { roomId, blobId: result.blobId, key: result.key, size: result.size, created: result.created });
      io.out(`blob ${result.blobId}`);
      io.out(`key  ${result.key}`);
      io.err("the key is secret: share it only inside an encrypted room message");
      return ExitCode.ok;
    } catch (err) {
      bar?.done();
      throw blobError(err);
    }
  },
});

const blobGet = clientCommand({
  name: "get",
  command: "blob get",
  summary: "download, verify and decrypt a blob into a file",
  usage:
    "Usage: unibus blob get <roomId> <blobId> --key K --out FILE [--json]\n\n" +
    "Every chunk is authenticated and the whole ciphertext is checked against the\n" +
    "blob id; FILE appears only when all checks pass (a partial file is removed).\n" +
    "The key may also come from UNIBUS_BLOB_KEY, which keeps it out of the shell\n" +
    "history and the process list.",
  optionsHelp: ["  --key K               the blob key from `blob put` (or UNIBUS_BLOB_KEY)", "  --out FILE            where to write the plaintext (must not exist)"],
  options: { key: { type: "string" }, out: { type: "string" } },
  positionals: ["roomId", "blobId"],
  validate(flags, positionals) {
    if (!ROOM_ID.test(positionals[0] ?? "")) throw new UsageError(`not a room id: ${positionals[0] ?? ""}`, "blob get");
    if (!BLOB_ID.test(positionals[1] ?? "")) throw new UsageError(`not a blob id: ${positionals[1] ?? ""} (64 lowercase hex)`, "blob get");
    if ((stringFlag(flags, "out") ?? "") === "") throw new UsageError("--out is required", "blob get");
  },
  async run({ client, flags, positionals, json, io }) {
    const roomId = positionals[0] ?? "";
    const blobId = positionals[1] ?? "";
    const keyText = stringFlag(flags, "key") ?? io.env["UNIBUS_BLOB_KEY"] ?? "";
    try {
      decodeBlobKey(keyText);
    } catch {
      throw new UsageError("--key must be the 32-byte base64url key printed by `blob put`", "blob get");
    }
    const out = resolve(io.cwd, stringFlag(flags, "out") ?? "");
    const tmp = join(dirname(out), `.${basename(out)}.${randomBytes(6).toString("hex")}.part`);
    let bar: ReturnType<typeof progressBar>;
    let written = 0;
    // 0600 and exclusive: the plaintext is nobody else's, and an existing file is not overwritten.
    const file = await open(tmp, "wx", 0o600).catch((err: unknown) => {
      throw new CliError(`cannot write next to ${out}: ${(err as Error).message}`, { cause: err });
    });
    try {
      try {
        for await (const part of streamBlob(client, roomId, blobId, keyText, {
          onProgress: (done, total) => {
            bar ??= progressBar(`download ${blobId.slice(0, 12)}`, total);
            bar?.update(done, total);
          },
        })) {
          await file.write(part);
          written += part.byteLength;
        }
      } finally {
        bar?.done();
        await file.close();
      }
      await rename(tmp, out).catch(async (err: unknown) => {
        throw new CliError(`cannot move the verified file to ${out}: ${(err as Error).message}`, { cause: err });
      });
    } catch (err) {
      await rm(tmp, { force: true });
      throw blobError(err);
    }
    if (json) return printJson(io, { roomId, blobId, out, bytes: written });
    io.out(`wrote ${written} bytes to ${out}`);
    return ExitCode.ok;
  },
});

/** `unibus blob put|get`: end-to-end encrypted files in a room, through the blobs service. */
export const blobCommandGroup: Command = commandGroup({
  name: "blob",
  summary: "store and fetch end-to-end encrypted files in a room",
  intro: "Usage: unibus blob <command> [args] [--json]\n\nEncrypted blobs (DESIGN §5): the client encrypts, the service stores ciphertext only.",
  subcommands: [blobPut, blobGet],
});
