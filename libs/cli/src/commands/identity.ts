import { resolve } from "node:path";
import { IdentityFileError, createIdentity, publicIdentity, toHex, writeIdentityFile } from "@unibus/crypto";
import { rotateAgreementKey } from "@unibus/sdk";
import { helpOption, parseCommandArgs, stringFlag } from "../args.js";
import { commandGroup } from "../command.js";
import type { Command } from "../command.js";
import { connectClientAs, connectionHelp, connectionOptions, requestError, resolveConnectionSettings } from "../connection.js";
import { CliError, ExitCode } from "../errors.js";
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

const identityCreate: Command = {
  name: "create",
  summary: "create a new identity file",
  help: createHelp,
  async run(args, io) {
    const { flags } = parseCommandArgs(
      args,
      { out: { type: "string", short: "o" }, label: { type: "string", short: "l" }, force: { type: "boolean", short: "f" } },
      { command: "identity create", maxPositionals: 0 },
    );
    if (flags.help) {
      io.out(createHelp);
      return ExitCode.ok;
    }
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
};

const showHelp = `Usage: unibus identity show [PATH] [--json]

Prints the public half of an identity file: principal id, public keys, label
and creation time. Secret keys are never printed.

Arguments:
  PATH          identity file (default: $UNIBUS_IDENTITY, else ./unibus.id)

Options:
  --json        print JSON
  -h, --help    show this help`;

const identityShow: Command = {
  name: "show",
  summary: "print an identity's public keys (never secrets)",
  help: showHelp,
  async run(args, io) {
    const { flags, positionals } = parseCommandArgs(args, { json: { type: "boolean" } }, { command: "identity show", maxPositionals: 1 });
    if (flags.help) {
      io.out(showHelp);
      return ExitCode.ok;
    }
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
};

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

const identityRotateAgreementKey: Command = {
  name: "rotate-agreement-key",
  summary: "replace the agreement key (room-key shares are sealed to it) and register the new one",
  help: rotateHelp,
  async run(args, io) {
    const { flags } = parseCommandArgs(args, { ...connectionOptions, ...helpOption }, { command: "identity rotate-agreement-key", maxPositionals: 0 });
    if (flags.help === true) {
      io.out(rotateHelp);
      return ExitCode.ok;
    }
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
};

/** `unibus identity create|show|rotate-agreement-key`. */
export const identityCommand: Command = commandGroup({
  name: "identity",
  summary: "create and inspect identity files",
  intro: "Usage: unibus identity <command>\n\nAn identity is an Ed25519 signing key (its nkey `U…` is your principal id)\nplus an X25519 key-agreement key, kept in a 0600 file.",
  subcommands: [identityCreate, identityShow, identityRotateAgreementKey],
});
