import type { Command } from "./command.js";
import { adminCommandGroup } from "./commands/admin.js";
import { auditCommandGroup } from "./commands/audit.js";
import { blobCommandGroup } from "./commands/blobs.js";
import { chatCommand } from "./commands/chat.js";
import { checkCommand } from "./commands/check.js";
import { identityCommand } from "./commands/identity.js";
import { microCommandGroup } from "./commands/micro.js";
import { roomsCommandGroup } from "./commands/rooms.js";
import { statusCommand } from "./commands/status.js";
import { storeCommandGroup } from "./commands/store.js";
import { clusterCommandGroup } from "./commands/cluster.js";
import { upCommand } from "./commands/up.js";
import { usersCommandGroup } from "./commands/users.js";
import { CliError, ExitCode, UsageError } from "./errors.js";
import type { CliIo } from "./io.js";

/** Top-level commands, in help order. */
export const COMMANDS: readonly Command[] = [upCommand, identityCommand, adminCommandGroup, usersCommandGroup, auditCommandGroup, roomsCommandGroup, chatCommand, blobCommandGroup, checkCommand, statusCommand, microCommandGroup, storeCommandGroup, clusterCommandGroup];

/** `unibus --help`. */
export const ROOT_HELP = [
  "Usage: unibus <command> [options]",
  "",
  "unibus: a secure message bus for teams and software agents, on NATS.",
  "",
  "Commands:",
  ...COMMANDS.map((c) => `  ${c.name.padEnd(10)}  ${c.summary}`),
  "",
  "Run `unibus <command> --help` for a command's options.",
  "Exit codes: 0 ok, 1 failure, 2 usage error.",
].join("\n");

/**
 * Runs the CLI with `argv` (without node and script) and returns the exit
 * code. Expected failures ({@link CliError}) print their message only; an
 * unexpected error prints its stack, because it is a bug to report.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const [name, ...rest] = argv;
  try {
    if (name === undefined) {
      io.err(ROOT_HELP);
      return ExitCode.usage;
    }
    if (name === "--help" || name === "-h") {
      io.out(ROOT_HELP);
      return ExitCode.ok;
    }
    if (name === "help") return showHelp(rest, io);
    const command = COMMANDS.find((c) => c.name === name);
    if (!command) throw new UsageError(`unknown command: ${name}`);
    return await command.run(rest, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`unibus: ${err.message}`);
      io.err(`Run \`unibus ${err.command ? `${err.command} ` : ""}--help\` for usage.`);
      return err.exitCode;
    }
    if (err instanceof CliError) {
      io.err(`unibus: ${err.message}`);
      return err.exitCode;
    }
    io.err(`unibus: unexpected error (a bug, please report it):\n${(err as Error).stack ?? String(err)}`);
    return ExitCode.failure;
  }
}

/** `unibus help [command [subcommand]]` is the same as `--help` at that level. */
async function showHelp(path: readonly string[], io: CliIo): Promise<number> {
  const [name, ...rest] = path;
  if (name === undefined) {
    io.out(ROOT_HELP);
    return ExitCode.ok;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) throw new UsageError(`unknown command: ${name}`);
  return command.run([...rest, "--help"], io);
}
