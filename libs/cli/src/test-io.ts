import type { CliIo } from "./io.js";

/** A {@link CliIo} that records output, for tests. */
export interface RecordingIo extends CliIo {
  /** Everything written to stdout. */
  readonly stdout: string[];
  /** Everything written to stderr. */
  readonly stderr: string[];
  /** stdout and stderr joined, for "never prints X" checks. */
  all(): string;
}

/** An in-memory io with the given environment and cwd. */
export function recordingIo(opts: { env?: Record<string, string | undefined>; cwd: string; lines?: AsyncIterable<string> }): RecordingIo {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return {
    out: (line) => void stdout.push(line),
    err: (line) => void stderr.push(line),
    env: opts.env ?? {},
    cwd: opts.cwd,
    ...(opts.lines === undefined ? {} : { lines: () => opts.lines! }),
    stdout,
    stderr,
    all: () => [...stdout, ...stderr].join("\n"),
  };
}
