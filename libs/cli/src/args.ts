import { parseArgs } from "node:util";
import type { ParseArgsConfig } from "node:util";
import { UsageError } from "./errors.js";

/** Option definitions in `node:util` parseArgs form. */
export type OptionSpec = NonNullable<ParseArgsConfig["options"]>;

/** Parsed flags: string or boolean values by option name. */
export type ParsedFlags = Record<string, string | boolean | undefined>;

/** Result of {@link parseCommandArgs}. */
export interface ParsedArgs {
  /** Option values by long name. */
  readonly flags: ParsedFlags;
  /** Positional arguments in order. */
  readonly positionals: readonly string[];
}

/** Every command accepts `-h/--help`. */
export const helpOption = { help: { type: "boolean", short: "h" } } as const satisfies OptionSpec;

/**
 * Parses a command's arguments strictly: an unknown flag, a missing value or
 * too many positionals is a {@link UsageError} (exit 2) naming `command`.
 */
export function parseCommandArgs(
  args: readonly string[],
  options: OptionSpec,
  opts: { command: string; maxPositionals: number },
): ParsedArgs {
  let parsed: { values: ParsedFlags; positionals: string[] };
  try {
    const result = parseArgs({
      args: [...args],
      options: { ...helpOption, ...options },
      allowPositionals: true,
      strict: true,
    });
    parsed = { values: result.values, positionals: result.positionals };
  } catch (err) {
    // parseArgs reports usage problems as TypeErrors with ERR_PARSE_ARGS_* codes.
    const code = (err as { code?: unknown }).code;
    if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS")) {
      throw new UsageError((err as Error).message, opts.command);
    }
    throw err;
  }
  if (!parsed.values.help && parsed.positionals.length > opts.maxPositionals) {
    const extra = parsed.positionals.slice(opts.maxPositionals).join(" ");
    throw new UsageError(`unexpected argument: ${extra}`, opts.command);
  }
  return { flags: parsed.values, positionals: parsed.positionals };
}

/** A string flag's value, or undefined when absent. */
export function stringFlag(flags: ParsedFlags, name: string): string | undefined {
  const v = flags[name];
  return typeof v === "string" ? v : undefined;
}
