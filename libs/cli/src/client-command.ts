import { normalisePrincipal } from "@unibus/crypto";
import type { UnibusClient } from "@unibus/sdk";
import { parseCommandArgs } from "./args.js";
import type { OptionSpec, ParsedFlags } from "./args.js";
import type { Command } from "./command.js";
import { connectClient, connectionHelp, connectionOptions, requestError, resolveConnectionSettings } from "./connection.js";
import { CliError, ExitCode, UsageError } from "./errors.js";
import type { CliIo } from "./io.js";

/** What a {@link clientCommand}'s body receives. */
export interface ClientCommandCall {
  /** Connected as the caller's identity; closed by the wrapper. */
  readonly client: UnibusClient;
  /** Parsed flags. */
  readonly flags: ParsedFlags;
  /** Positional arguments, count already checked. */
  readonly positionals: readonly string[];
  /** True with `--json`. */
  readonly json: boolean;
  readonly io: CliIo;
}

/** Shape of one signed-request command (`users add`, `rooms create`, …). */
export interface ClientCommandSpec {
  readonly name: string;
  /** Full command path for messages, e.g. `users add`. */
  readonly command: string;
  readonly summary: string;
  /** Usage line and description; connection and common options are appended. */
  readonly usage: string;
  /** Extra option lines for the help. */
  readonly optionsHelp?: readonly string[];
  readonly options?: OptionSpec;
  /** Names of the required positionals, in order. */
  readonly positionals: readonly string[];
  /** Checks the command line before connecting; throws a {@link UsageError}. */
  validate?(flags: ParsedFlags, positionals: readonly string[]): void;
  run(call: ClientCommandCall): Promise<number>;
}

/**
 * Builds a command that parses, connects through the SDK as the caller,
 * runs one request and closes. Service errors become "forbidden: …" style
 * {@link CliError}s (exit 1); a wrong command line is a usage error (exit 2).
 */
export function clientCommand(spec: ClientCommandSpec): Command {
  const help = [
    spec.usage,
    "",
    "Options:",
    ...(spec.optionsHelp ?? []),
    "  --json                print JSON",
    "  -h, --help            show this help",
    "",
    connectionHelp,
  ].join("\n");
  return {
    name: spec.name,
    summary: spec.summary,
    help,
    async run(args, io) {
      const { flags, positionals } = parseCommandArgs(
        args,
        { ...connectionOptions, json: { type: "boolean" }, ...spec.options },
        { command: spec.command, maxPositionals: spec.positionals.length },
      );
      if (flags.help) {
        io.out(help);
        return ExitCode.ok;
      }
      const missing = spec.positionals.slice(positionals.length);
      if (missing.length > 0) throw new UsageError(`missing ${missing.map((m) => `<${m}>`).join(" ")}`, spec.command);
      spec.validate?.(flags, positionals);
      const settings = await resolveConnectionSettings(flags, io);
      const client = await connectClient(settings, `unibus-cli ${spec.command}`);
      try {
        return await spec.run({ client, flags, positionals, json: flags.json === true, io });
      } catch (err) {
        if (err instanceof CliError) throw err;
        throw requestError(err, "membership");
      } finally {
        await client.close().catch(() => undefined);
      }
    },
  };
}

/** Prints `value` as indented JSON. */
export function printJson(io: CliIo, value: unknown): number {
  io.out(JSON.stringify(value, null, 2));
  return ExitCode.ok;
}

/** A principal argument (`U…` or 64-hex), normalised; anything else is a usage error. */
export function principalArg(raw: string, command: string): string {
  try {
    return normalisePrincipal(raw);
  } catch {
    throw new UsageError(`not a principal: ${raw} (expected a U… nkey or a 64-hex public key)`, command);
  }
}
