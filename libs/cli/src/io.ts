import { createInterface } from "node:readline";
/**
 * What a command may touch of its surroundings. Commands receive this instead
 * of reading `process` so tests run them in-process with captured output and
 * a private environment.
 */
export interface CliIo {
  /** Writes a line (a newline is appended) to standard output. */
  out(line: string): void;
  /** Writes a line (a newline is appended) to standard error. */
  err(line: string): void;
  /** Environment variables (a copy in tests). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Directory relative paths are resolved against. */
  readonly cwd: string;
  /** Lines of standard input (without newlines), for interactive commands; absent means no input. */
  lines?(): AsyncIterable<string>;
}

/**
 * A reader that stops early (`unibus users list | head`) closes the pipe: the
 * output is no longer wanted, so the command ends quietly instead of dying on
 * an unhandled EPIPE with a stack trace.
 */
function quietOnClosedPipe(stream: NodeJS.WriteStream): void {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  });
}

/** The real process's streams, environment and working directory. */
export function processIo(): CliIo {
  quietOnClosedPipe(process.stdout);
  return {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    env: process.env,
    cwd: process.cwd(),
    // Terminal or pipe alike, so tests and scripts can drive `unibus chat`.
    lines: async function* () {
      const rl = createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
      try {
        yield* rl;
      } finally {
        // A reader that stops early (`/quit`) must release stdin, or the process waits for its end.
        rl.close();
      }
    },
  };
}
