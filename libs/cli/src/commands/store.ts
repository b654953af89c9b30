import { join, resolve } from "node:path";
import { parseCommandArgs, stringFlag } from "../args.js";
import { commandGroup } from "../command.js";
import type { Command } from "../command.js";
import { CliError, ExitCode, UsageError } from "../errors.js";
import { ensurePrivateDir } from "../home.js";
import type { HomeLayout } from "../home.js";
import type { CliIo } from "../io.js";
import { generateJetStreamKey } from "../up/provision.js";
import { backupStore, encryptStore, readKeyFile, restoreStore, rotateKey, writeNewKeyFile } from "../store/operations.js";
import { onStoppedBus } from "../store/stopped-bus.js";

const STOPPED_BUS = `The bus must be stopped: the command takes the state dir's lock (as
\`unibus up\` does) and runs its own private nats-server on a random loopback
port, reachable only with a key that lives in this process.`;

const KEY_FILE_HELP = `  --key-file PATH       backup key file: one line of 32+ characters, mode 0600
                        (default: <state dir>/secrets/backup.key; backup creates
                        it when missing). Keep a copy apart from the backups:
                        without it they cannot be restored.`;

/** The backup key file: separate from the JetStream key, so a key rotation leaves old backups readable. */
function backupKeyPath(home: HomeLayout, flag: string | undefined, io: CliIo): string {
  return flag === undefined ? join(home.secretsDir, "backup.key") : resolve(io.cwd, flag);
}


function simple(name: string, summary: string, help: string, run: (io: CliIo) => Promise<void>): Command {
  return {
    name,
    summary,
    help,
    async run(args, io) {
      const { flags } = parseCommandArgs(args, {}, { command: `store ${name}`, maxPositionals: 0 });
      if (flags.help) {
        io.out(help);
        return ExitCode.ok;
      }
      await run(io);
      return ExitCode.ok;
    },
  };
}

const rotateHelp = `Usage: unibus store rotate-key

Replaces the JetStream at-rest key. A new key is written to
secrets/jetstream.key.next; every stream and consumer is copied (snapshot
and restore) into a new store under it and checked against the original
(message counts, a hash of every message, consumer positions); the copy is
swapped in, the old store files are deleted and the new key replaces
secrets/jetstream.key. (nats-server's prev_key is not used: it drops durable
consumers while it re-encrypts.)

If it is interrupted, run it again: it finishes with the .next key, and
\`unibus up\` refuses to start until then. Backups made with the separate
backup key (the default) stay restorable.

${STOPPED_BUS}`;

const encryptHelp = `Usage: unibus store encrypt

Migrates a plaintext store (an older state dir, or one written by a server
without a cipher) to an encrypted one. Every stream is copied (snapshot and
restore) into a new store under the key, checked against the original
(message counts, a hash of every message, consumer positions), swapped in,
and the old store files are deleted: adding a key to a server does not
reliably re-encrypt blocks already on disk. Uses secrets/jetstream.key, or
creates it for a store that is wholly plaintext.

${STOPPED_BUS}`;

const backupHelp = `Usage: unibus store backup FILE [--key-file PATH]

Writes every stream (data and consumers) to FILE. JetStream snapshots hold
the data in the clear, so FILE is encrypted (XChaCha20-Poly1305, key derived
with HKDF-SHA256 from the backup key) and authenticated chunk by chunk.
An existing FILE is never overwritten.

Options:
${KEY_FILE_HELP}
  -h, --help            show this help

${STOPPED_BUS}`;

const restoreHelp = `Usage: unibus store restore FILE [--key-file PATH] [--replace]

Restores a backup made by \`unibus store backup\`. The whole file is
authenticated before anything is touched: a wrong key or a damaged or
truncated file fails and leaves the store as it was. The streams are restored
into a new store, each checked against the backup's record, and only then
swapped in for the current one.

Options:
${KEY_FILE_HELP}
  --replace             replace a store that holds data (refused otherwise)
  -h, --help            show this help

${STOPPED_BUS}`;

const fileOptions = { "key-file": { type: "string" } } as const;

const backupCommand: Command = {
  name: "backup",
  summary: "write every stream to an encrypted backup file",
  help: backupHelp,
  async run(args, io) {
    const { flags, positionals } = parseCommandArgs(args, fileOptions, { command: "store backup", maxPositionals: 1 });
    if (flags.help) {
      io.out(backupHelp);
      return ExitCode.ok;
    }
    const file = positionals[0];
    if (file === undefined) throw new UsageError("FILE is required", "store backup");
    await onStoppedBus(io, "store backup", async (ctx) => {
      const keyPath = backupKeyPath(ctx.home, stringFlag(flags, "key-file"), io);
      let key: string;
      try {
        key = await readKeyFile(keyPath, "backup key file");
      } catch (err) {
        if (stringFlag(flags, "key-file") !== undefined || !(err instanceof CliError) || !err.message.endsWith("does not exist")) throw err;
        await ensurePrivateDir(ctx.home.secretsDir);
        key = generateJetStreamKey();
        await writeNewKeyFile(keyPath, key);
        ctx.say(`created the backup key ${keyPath}: keep a copy apart from the backups`);
      }
      await backupStore(ctx, resolve(io.cwd, file), key);
    });
    return ExitCode.ok;
  },
};

const restoreCommand: Command = {
  name: "restore",
  summary: "restore an encrypted backup file (verified before anything is replaced)",
  help: restoreHelp,
  async run(args, io) {
    const { flags, positionals } = parseCommandArgs(args, { ...fileOptions, replace: { type: "boolean" } }, { command: "store restore", maxPositionals: 1 });
    if (flags.help) {
      io.out(restoreHelp);
      return ExitCode.ok;
    }
    const file = positionals[0];
    if (file === undefined) throw new UsageError("FILE is required", "store restore");
    await onStoppedBus(io, "store restore", async (ctx) => {
      const key = await readKeyFile(backupKeyPath(ctx.home, stringFlag(flags, "key-file"), io), "backup key file");
      await restoreStore(ctx, resolve(io.cwd, file), key, flags.replace === true);
    });
    return ExitCode.ok;
  },
};

/** `unibus store …`: at-rest key rotation, encryption of a plaintext store, backup and restore. */
export const storeCommandGroup: Command = commandGroup({
  name: "store",
  summary: "JetStream store: rotate the at-rest key, encrypt, back up, restore",
  intro: "Usage: unibus store <command>\n\nMaintenance of the local bus's JetStream store (the bus must be stopped).",
  subcommands: [
    simple("rotate-key", "re-encrypt the store under a new at-rest key", rotateHelp, async (io) => {
      await onStoppedBus(io, "store rotate-key", rotateKey);
    }),
    simple("encrypt", "migrate a plaintext store to an encrypted one", encryptHelp, async (io) => {
      await onStoppedBus(io, "store encrypt", encryptStore);
    }),
    backupCommand,
    restoreCommand,
  ],
});
