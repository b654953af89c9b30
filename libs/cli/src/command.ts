import { parseCommandArgs } from "./args.js";
import type { OptionSpec, ParsedArgs } from "./args.js";
import { ExitCode, UsageError } from "./errors.js";
import type { CliIo } from "./io.js";

/**
 * A CLI command or subcommand. `run` returns the exit code; expected failures
 * are thrown as `CliError` and printed by the router.
 */
export interface Command {
  /** Name as typed on the command line. */
  readonly name: string;
  /** One line for the parent's command list. */
  readonly summary: string;
  /** Full help text (usage, options, examples). */
  readonly help: string;
  /** Runs with the arguments after the command name. */
  run(args: readonly string[], io: CliIo): Promise<number>;
}

/**
 * Dispatches to one of `subcommands`. With no subcommand, or `--help` before
 * one, prints the group's help.
 */
export function commandGroup(spec: {
  name: string;
  summary: string;
  intro: string;
  subcommands: readonly Command[];
}): Command {
  const width = Math.max(...spec.subcommands.map((c) => c.name.length));
  const help = [
    spec.intro,
    "",
    "Commands:",
    ...spec.subcommands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    `Run \`unibus ${spec.name} <command> --help\` for a command's options.`,
  ].join("\n");
  return {
    name: spec.name,
    summary: spec.summary,
    help,
    async run(args, io) {
      const [first, ...rest] = args;
      if (first === undefined) {
        // A bare group name is a usage mistake: help goes to stderr, exit 2.
        io.err(help);
        return ExitCode.usage;
      }
      if (first === "--help" || first === "-h" || first === "help") {
        io.out(help);
        return ExitCode.ok;
      }
      const sub = spec.subcommands.find((c) => c.name === first);
      if (!sub) throw new UsageError(`unknown command: ${spec.name} ${first}`, spec.name);
      return sub.run(rest, io);
    },
  };
}

/** Shape of a {@link parsedCommand}: a {@link Command} whose body gets its arguments parsed. */
export interface ParsedCommandSpec {
  readonly name: string;
  /** Full command path for usage errors, e.g. `identity create`. */
  readonly command: string;
  readonly summary: string;
  readonly help: string;
  /** Its options; `-h/--help` is always added. */
  readonly options: OptionSpec;
  readonly maxPositionals: number;
  /** Runs only when the arguments parsed and no help was asked for. */
  run(args: ParsedArgs, io: CliIo): Promise<number>;
}

/**
 * A command that parses its arguments strictly (a wrong command line is a
 * usage error, exit 2) and answers `-h/--help` with its help before its
 * body runs, so no command can act on a line that only asked for help.
 */
export function parsedCommand(spec: ParsedCommandSpec): Command {
  return {
    name: spec.name,
    summary: spec.summary,
    help: spec.help,
    async run(args, io) {
      const parsed = parseCommandArgs(args, spec.options, { command: spec.command, maxPositionals: spec.maxPositionals });
      if (parsed.flags.help) {
        io.out(spec.help);
        return ExitCode.ok;
      }
      return spec.run(parsed, io);
    },
  };
}
