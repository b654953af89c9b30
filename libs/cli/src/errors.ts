/**
 * Process exit codes of the CLI. Scripts rely on them, so they never change:
 * 0 success, 1 an operation failed, 2 the command line was wrong.
 */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
} as const;
/** One of the {@link ExitCode} values. */
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/**
 * An expected failure (unreachable server, missing identity file, …). The
 * router prints only its message, never a stack trace: the message is written
 * for the person at the terminal and must say what to do next.
 */
export class CliError extends Error {
  /** Exit code the process ends with. */
  readonly exitCode: ExitCode;

  constructor(message: string, options?: { cause?: unknown; exitCode?: ExitCode }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "CliError";
    this.exitCode = options?.exitCode ?? ExitCode.failure;
  }
}

/** The command line itself is wrong; the router adds a pointer to `--help`. */
export class UsageError extends CliError {
  /** The command whose help explains the correct usage, e.g. `identity create`. */
  readonly command: string | undefined;

  constructor(message: string, command?: string) {
    super(message, { exitCode: ExitCode.usage });
    this.name = "UsageError";
    this.command = command;
  }
}
