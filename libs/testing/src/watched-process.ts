import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";

/** Which output a {@link WatchedProcess.waitFor} reads: one stream, or both interleaved. */
export type WatchedStream = "stdout" | "stderr" | "output";

/** A child process whose output is captured, so a test waits on the lines it prints, never on a clock. */
export interface WatchedProcess {
  readonly child: ChildProcess;
  /** stdout and stderr so far, interleaved as they arrived. */
  output(): string;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (null when a signal ended it). */
  readonly exited: Promise<number | null>;
  /** The exit code, once the process ends within `ms`; rejects with its output otherwise. */
  exitCode(ms?: number): Promise<number | null>;
  /**
   * Resolves with the time (`performance.now()`) `pattern` first matched
   * `stream`; rejects with the output if the process ends first or `ms` pass.
   */
  waitFor(stream: WatchedStream, pattern: RegExp, ms?: number): Promise<number>;
  /** Writes a line to its stdin (spawned with `stdin: "pipe"`). */
  type(line: string): void;
}

/** Options of {@link spawnWatched}. */
export interface SpawnWatchedOptions {
  env?: NodeJS.ProcessEnv;
  /** Default "ignore". */
  stdin?: "ignore" | "pipe";
  /** How the process is named in errors. Default: the command and its arguments. */
  label?: string;
}

/** Starts `command` with its stdout and stderr captured for {@link WatchedProcess.waitFor}. */
export function spawnWatched(command: string, args: readonly string[], opts: SpawnWatchedOptions = {}): WatchedProcess {
  const child = spawn(command, args, { env: opts.env, stdio: [opts.stdin ?? "ignore", "pipe", "pipe"] });
  const label = opts.label ?? [command, ...args].join(" ");
  const text: Record<WatchedStream, string> = { stdout: "", stderr: "", output: "" };
  const seen = new Map<string, number>();
  let closed = false;
  const waiters = new Set<() => void>();
  const notify = (): void => waiters.forEach((w) => w());
  for (const stream of ["stdout", "stderr"] as const) {
    child[stream]?.on("data", (d: Buffer) => {
      text[stream] += d.toString();
      text.output += d.toString();
      notify();
    });
  }
  child.once("close", () => {
    closed = true;
    notify();
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return {
    child,
    output: () => text.output,
    stdout: () => text.stdout,
    stderr: () => text.stderr,
    exited,
    exitCode: (ms = 10_000) => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${label} still running after ${ms} ms:\n${text.output}`)), ms)));
      return Promise.race([exited, late]).finally(() => clearTimeout(timer));
    },
    waitFor: (stream, pattern, ms = 10_000) =>
      new Promise<number>((resolve, reject) => {
        const key = `${stream}:${pattern.source}/${pattern.flags}`;
        const fail = (why: string): void => done(() => reject(new Error(`${label}: ${why} waiting for ${pattern} on ${stream}:\n${text.output}`)));
        const timer = setTimeout(() => fail(`timed out after ${ms} ms`), ms);
        const check = (): void => {
          if (pattern.test(text[stream])) {
            if (!seen.has(key)) seen.set(key, performance.now());
            done(() => resolve(seen.get(key) ?? performance.now()));
          } else if (closed) fail(`exited (${child.exitCode})`);
        };
        const done = (then: () => void): void => {
          clearTimeout(timer);
          waiters.delete(check);
          then();
        };
        // Registered before the check, so a line arriving meanwhile records its time.
        waiters.add(check);
        check();
      }),
    type: (line) => {
      child.stdin?.write(`${line}\n`);
    },
  };
}
