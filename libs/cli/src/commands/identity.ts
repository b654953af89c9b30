import { open } from "node:fs/promises";
import { resolve } from "node:path";
import { IdentityFileError, createIdentity, publicIdentity, toHex, writeIdentityFile } from "@unibus/crypto";
import { rotateAgreementKey } from "@unibus/sdk";
import { stringFlag } from "../args.js";
import { commandGroup, parsedCommand } from "../command.js";
import type { Command } from "../command.js";
import { connectClientAs, connectionHelp, connectionOptions, requestError, resolveConnectionSettings } from "../connection.js";
import { CliError, ExitCode, UsageError } from "../errors.js";
import { EnvVar } from "../home.js";
import { loadIdentityForCli } from "../identity-file.js";
import type { CliIo } from "../io.js";

/** Default identity path: `UNIBUS_IDENTITY`, else `./unibus.id`. */
export function defaultIdentityPath(io: CliIo): string {
  const fromEnv = io.env[EnvVar.identity];
  return resolve(io.cwd, fromEnv && fromEnv.length > 0 ? fromEnv : "unibus.id");
}

const createHelp = `Usage: unibus identity create [--out PATH] [--label LABEL] [--force]

Creates a new identity (Ed25519 signing key + X25519 key-agreement key) in a
file readable only by you (mode 0600) and prints its principal id.

Options:
  -o, --out PATH      where to write (default: $UNIBUS_IDENTITY, else ./unibus.id)
  -l, --label LABEL   a human label stored in the file, e.g. "alice laptop"
  -f, --force         replace an existing file (its old key is lost for good)
  -h, --help          show this help`;

const identityCreate = parsedCommand({
  name: "create",
  command: "identity create",
  summary: "create a new identity file",
  help: createHelp,
  options: { out: { type: "string", short: "o" }, label: { type: "string", short: "l" }, force: { type: "boolean", short: "f" } },
  maxPositionals: 0,
  async run({ flags }, io) {
    const out = stringFlag(flags, "out");
    const path = out === undefined ? defaultIdentityPath(io) : resolve(io.cwd, out);
    const label = stringFlag(flags, "label");
    const identity = createIdentity(label === undefined ? {} : { label });
    try {
      await writeIdentityFile(path, identity, { overwrite: flags.force === true });
    } catch (err) {
      if (err instanceof IdentityFileError && err.code === "exists") {
        throw new CliError(
          `refusing to overwrite the existing identity file ${path}: its key would be lost for good.\n` +
            "Pick another path with --out, or pass --force if you really mean to replace it.",
          { cause: err },
        );
      }
      throw new CliError(`cannot write identity file ${path}: ${(err as Error).message}`, { cause: err });
    }
    io.out(`created identity ${identity.principal}`);
    io.out(`  file: ${path} (mode 0600: keep it secret, back it up)`);
    return ExitCode.ok;
  },
});

const showHelp = `Usage: unibus identity show [PATH] [--json]

Prints the public half of an identity file: principal id, public keys, label
and creation time. Secret keys are never printed.

Arguments:
  PATH          identity file (default: $UNIBUS_IDENTITY, else ./unibus.id)

Options:
  --json        print JSON
  -h, --help    show this help`;

const identityShow = parsedCommand({
  name: "show",
  command: "identity show",
  summary: "print an identity's public keys (never secrets)",
  help: showHelp,
  options: { json: { type: "boolean" } },
  maxPositionals: 1,
  async run({ flags, positionals }, io) {
    const [arg] = positionals;
    const path = arg === undefined ? defaultIdentityPath(io) : resolve(io.cwd, arg);
    // Only publicIdentity() output is ever printed: it holds no secret by construction.
    const pub = publicIdentity(await loadIdentityForCli(path));
    if (flags.json) {
      io.out(JSON.stringify({ ...pub, file: path }, null, 2));
      return ExitCode.ok;
    }
    io.out(`principal:            ${pub.principal}`);
    io.out(`signing public key:   ${pub.signingPublicKey}`);
    io.out(`agreement public key: ${pub.agreementPublicKey}`);
    if (pub.label !== undefined) io.out(`label:                ${pub.label}`);
    io.out(`created:              ${pub.createdAt}`);
    io.out(`file:                 ${path}`);
    return ExitCode.ok;
  },
});

const rotateHelp = [
  "Usage: unibus identity rotate-agreement-key [connection options]",
  "",
  "Replaces the identity's X25519 agreement key with a new one, rewrites the",
  "identity file (0600) and registers the new key with the keys service, bound",
  "by a signature of your identity key. The next room-key epoch an owner seals",
  "(the next membership change, or an owner's rekey) is sealed to the new key.",
  "",
  "Why: room-key shares are sealed to this key and kept by the keys service, so",
  "a key stolen later opens every share ever sealed to it. After a rotation it",
  "opens only what was sealed before; the old secret is dropped, so this",
  "identity can no longer open epochs sealed to it either (until the next",
  "epoch, it cannot read the room's current one).",
  "",
  connectionHelp,
].join("\n");

const identityRotateAgreementKey = parsedCommand({
  name: "rotate-agreement-key",
  command: "identity rotate-agreement-key",
  summary: "replace the agreement key (room-key shares are sealed to it) and register the new one",
  help: rotateHelp,
  options: connectionOptions,
  maxPositionals: 0,
  async run({ flags }, io) {
    const settings = await resolveConnectionSettings(flags, io);
    if (settings.identityPath === undefined) throw new CliError("no identity to rotate: pass --identity PATH or set UNIBUS_IDENTITY");
    const path = settings.identityPath;
    const identity = await loadIdentityForCli(path);
    const client = await connectClientAs(settings, identity, "unibus-cli identity");
    try {
      const rotated = await rotateAgreementKey(client, identity, {
        persist: async (next) => {
          try {
            await writeIdentityFile(path, next, { overwrite: true });
          } catch (err) {
            throw new CliError(`cannot write identity file ${path}: ${(err as Error).message}`, { cause: err });
          }
        },
      }).catch((err: unknown) => {
        throw err instanceof CliError ? err : requestError(err, "keys");
      });
      io.out(`rotated the agreement key of ${rotated.principal}`);
      io.out(`  new agreement public key: ${toHex(rotated.agreementPublicKey)}`);
      io.out(`  file: ${path} (rewritten, mode 0600); the next epoch an owner seals uses the new key`);
    } finally {
      await client.close();
    }
    return ExitCode.ok;
  },
});

const exportNkeyHelp = `Usage: unibus identity export-nkey --out PATH [IDENTITY]

Writes the identity's Ed25519 signing seed as an nkey user seed file (\`SU…\`,
one line, mode 0600), the form the \`nats\` CLI (\`--nkey PATH\`) and every
NATS client library read. The seed is never printed. An existing file is
never overwritten.

The bus answers a request only on the caller's own inbox, so a NATS tool must
also use the inbox prefix \`_INBOX.<principal>\` (for the \`nats\` CLI:
\`--inbox-prefix _INBOX.<principal>\`); the command prints the exact flags.

Arguments:
  IDENTITY      identity file (default: $UNIBUS_IDENTITY, else ./unibus.id)

Options:
  -o, --out PATH  where to write the seed file (required)
  -h, --help      show this help`;

const identityExportNkey = parsedCommand({
  name: "export-nkey",
  command: "identity export-nkey",
  summary: "write the identity's signing seed as an nkey seed file for NATS tools",
  help: exportNkeyHelp,
  options: { out: { type: "string", short: "o" } },
  maxPositionals: 1,
  async run({ flags, positionals }, io) {
    const out = stringFlag(flags, "out");
    // No default path: a seed file appearing somewhere unasked is a key left lying around.
    if (out === undefined) throw new UsageError("identity export-nkey needs --out PATH (where to write the seed file)", "identity export-nkey");
    const [arg] = positionals;
    const source = arg === undefined ? defaultIdentityPath(io) : resolve(io.cwd, arg);
    const identity = await loadIdentityForCli(source);
    const path = resolve(io.cwd, out);
    await writeSeedFile(path, identity.signingKey.nkeySeed());
    io.out(`wrote the nkey seed of ${identity.principal}`);
    io.out(`  file: ${path} (mode 0600: it is the same secret as ${source})`);
    io.out(`  nats CLI: nats --nkey ${path} --inbox-prefix _INBOX.${identity.principal} ...`);
    return ExitCode.ok;
  },
});

/**
 * Creates the seed file exclusively with mode 0600: "wx" refuses an existing
 * path (a symlink included), so the export can neither clobber another key
 * nor be redirected into a file someone else can read.
 */
async function writeSeedFile(path: string, seed: string): Promise<void> {
  let fh;
  try {
    fh = await open(path, "wx", 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") {
      throw new CliError(`refusing to overwrite the existing file ${path}; pick another path with --out`, { cause: err });
    }
    throw new CliError(`cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    await fh.writeFile(`${seed}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** `unibus identity create|show|rotate-agreement-key|export-nkey`. */
export const identityCommand: Command = commandGroup({
  name: "identity",
  summary: "create and inspect identity files",
  intro: "Usage: unibus identity <command>\n\nAn identity is an Ed25519 signing key (its nkey `U…` is your principal id)\nplus an X25519 key-agreement key, kept in a 0600 file.",
  subcommands: [identityCreate, identityShow, identityRotateAgreementKey, identityExportNkey],
});
