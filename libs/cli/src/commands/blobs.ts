import { createReadStream } from "node:fs";
import { link, lstat, open, readFile, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { BlobIntegrityError, decodeBlobKey, putBlob, streamBlob } from "@unibus/sdk";
import type { BlobProgress } from "@unibus/sdk";
import { stringFlag } from "../args.js";
import type { ParsedFlags } from "../args.js";
import { clientCommand, printJson } from "../client-command.js";
import { commandGroup } from "../command.js";
import type { Command } from "../command.js";
import { requestError } from "../connection.js";
import { CliError, ExitCode, UsageError } from "../errors.js";
import type { CliIo } from "../io.js";

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

/** Where `blob get` may take the key from: never argv, which other local users can read in the process list. */
const KEY_SOURCES =
  "pass it with --key-file FILE (mode 0600), --key-stdin (first line of standard input) or the UNIBUS_BLOB_KEY environment variable";

function errorCode(err: unknown): unknown {
  return (err as { code?: unknown }).code;
}

/**
 * Reads the blob key from exactly one safe channel (`--key` was refused
 * already: a key on the command line leaks through `ps`, /proc/<pid>/cmdline
 * and shell history).
 */
async function readBlobKey(flags: ParsedFlags, io: CliIo): Promise<string> {
  const file = stringFlag(flags, "key-file");
  const fromStdin = flags["key-stdin"] === true;
  if (file !== undefined && fromStdin) throw new UsageError("give either --key-file or --key-stdin, not both", "blob get");
  let text: string | undefined;
  if (file !== undefined) {
    const path = resolve(io.cwd, file);
    let st;
    try {
      st = await stat(path);
    } catch (err) {
      throw new CliError(`cannot read the key file ${path}: ${(err as Error).message}`, { cause: err });
    }
    // Like ssh with a private key: a key file others can read is a key already shared.
    if ((st.mode & 0o077) !== 0) throw new CliError(`the key file ${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`);
    text = (await readFile(path, "utf8")).trim();
  } else if (fromStdin) {
    if (io.lines === undefined) throw new UsageError("--key-stdin: no standard input to read", "blob get");
    for await (const line of io.lines()) {
      text = line.trim();
      break;
    }
  } else {
    text = io.env["UNIBUS_BLOB_KEY"];
  }
  if (text === undefined || text === "") throw new UsageError(`the blob key is required: ${KEY_SOURCES}`, "blob get");
  try {
    decodeBlobKey(text);
  } catch {
    throw new UsageError("the key must be the 32-byte base64url key printed by `blob put`", "blob get");
  }
  return text;
}

/**
 * Writes the key of `blob put` to a new file, 0600 and exclusive: an existing
 * file (perhaps another blob's key) is never overwritten.
 */
async function writeKeyFile(path: string, key: string): Promise<void> {
  const file = await open(path, "wx", 0o600).catch((err: unknown) => {
    // Checked before the upload too; here the blob is stored already, and its key is withheld rather than printed where nobody asked for it.
    if (errorCode(err) === "EEXIST") throw new CliError(`${path} appeared during the upload: the blob was stored but its key is not kept; upload again with a new --key-file`);
    throw new CliError(`cannot create the key file ${path} (the blob was stored but its key is not kept): ${(err as Error).message}`, { cause: err });
  });
  try {
    await file.writeFile(`${key}\n`);
  } finally {
    await file.close();
  }
}

const blobPut = clientCommand({
  name: "put",
  command: "blob put",
  summary: "encrypt a file and store it in a room",
  usage:
    "Usage: unibus blob put <roomId> <file> [--key-file KEYFILE] [--json]\n\n" +
    "Encrypts the file on this machine with a fresh random key and uploads only\n" +
    "ciphertext; the service checks its SHA-256 (the blob id) and your room\n" +
    "membership. Prints the blob id, and the KEY on stdout unless --key-file is\n" +
    "given (then the key goes into that new file, mode 0600, and not to stdout).\n" +
    "The key is the only way to read the blob: it is secret, share it only inside\n" +
    "an encrypted room message, and do not paste it into logs or tickets. It is\n" +
    "never written to stderr or the command line of another process.",
  optionsHelp: ["  --key-file KEYFILE    write the key to this new file (0600) instead of stdout"],
  options: { "key-file": { type: "string" } },
  positionals: ["roomId", "file"],
  validate(_flags, positionals) {
    if (!ROOM_ID.test(positionals[0] ?? "")) throw new UsageError(`not a room id: ${positionals[0] ?? ""}`, "blob put");
  },
  async run({ client, flags, positionals, json, io }) {
    const roomId = positionals[0] ?? "";
    const path = resolve(io.cwd, positionals[1] ?? "");
    const keyFileFlag = stringFlag(flags, "key-file");
    const keyFile = keyFileFlag === undefined ? undefined : resolve(io.cwd, keyFileFlag);
    // Refused before the upload: a blob whose key has nowhere to go is unreadable.
    if (keyFile !== undefined) {
      const exists = await lstat(keyFile).then(
        () => true,
        () => false,
      );
      if (exists) throw new CliError(`${keyFile} already exists: the key file must be new, nothing was uploaded`);
    }
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
      if (keyFile !== undefined) {
        await writeKeyFile(keyFile, result.key);
        if (json) return printJson(io, { roomId, blobId: result.blobId, keyFile, size: result.size, created: result.created });
        io.out(`blob ${result.blobId}`);
        io.out(`key  written to ${keyFile} (0600)`);
      } else {
        if (json) return printJson(io, { roomId, blobId: result.blobId, key: result.key, size: result.size, created: result.created });
        io.out(`blob ${result.blobId}`);
        io.out(`key  ${result.key}`);
      }
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
    "Usage: unibus blob get <roomId> <blobId> (--key-file KEYFILE | --key-stdin) --out FILE [--json]\n\n" +
    "Every chunk is authenticated and the whole ciphertext is checked against the\n" +
    "blob id; FILE must not exist, and appears (mode 0600) only when all checks\n" +
    "pass (a partial download is removed). The key comes from --key-file,\n" +
    "--key-stdin or UNIBUS_BLOB_KEY, never from the command line, which other\n" +
    "users can read in the process list.",
  optionsHelp: [
    "  --key-file KEYFILE    file holding the blob key from `blob put` (mode 0600)",
    "  --key-stdin           read the blob key from the first line of standard input",
    "  --out FILE            where to write the plaintext (must not exist)",
  ],
  // `key` is declared only so that it is refused with directions instead of "unknown option".
  options: { key: { type: "string" }, "key-file": { type: "string" }, "key-stdin": { type: "boolean" }, out: { type: "string" } },
  positionals: ["roomId", "blobId"],
  validate(flags, positionals) {
    if (flags["key"] !== undefined) throw new UsageError(`--key on the command line is refused: other users see it in the process list; ${KEY_SOURCES}`, "blob get");
    if (!ROOM_ID.test(positionals[0] ?? "")) throw new UsageError(`not a room id: ${positionals[0] ?? ""}`, "blob get");
    if (!BLOB_ID.test(positionals[1] ?? "")) throw new UsageError(`not a blob id: ${positionals[1] ?? ""} (64 lowercase hex)`, "blob get");
    if ((stringFlag(flags, "out") ?? "") === "") throw new UsageError("--out is required", "blob get");
  },
  async run({ client, flags, positionals, json, io }) {
    const roomId = positionals[0] ?? "";
    const blobId = positionals[1] ?? "";
    const keyText = await readBlobKey(flags, io);
    const out = resolve(io.cwd, stringFlag(flags, "out") ?? "");
    // Fail before downloading; the final link() below is what makes the refusal atomic.
    const exists = await lstat(out).then(
      () => true,
      () => false,
    );
    if (exists) throw new CliError(`${out} already exists: refusing to overwrite it (choose a new --out)`);
    const tmp = join(dirname(out), `.${basename(out)}.${randomBytes(6).toString("hex")}.part`);
    let bar: ReturnType<typeof progressBar>;
    let written = 0;
    // 0600 and exclusive: the plaintext is nobody else's, and nothing is written through a planted file or link.
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
      // link() never replaces an existing name (rename would): a file that
      // appeared at FILE during the download is left untouched.
      await link(tmp, out).catch((err: unknown) => {
        if (errorCode(err) === "EEXIST") throw new CliError(`${out} appeared during the download: refusing to overwrite it`);
        throw new CliError(`cannot move the verified file to ${out}: ${(err as Error).message}`, { cause: err });
      });
    } catch (err) {
      throw blobError(err);
    } finally {
      await rm(tmp, { force: true });
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
  intro: "Usage: unibus blob <command> [args] [--json]\n\nEncrypted blobs (docs/architecture.md §5): the client encrypts, the service stores ciphertext only.",
  subcommands: [blobPut, blobGet],
});
