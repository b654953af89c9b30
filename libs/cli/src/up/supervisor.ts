import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { PARENT_LIFELINE_FD_ENV } from "@unibus/kit";

/** How one supervised process is started. */
export interface ChildSpec {
  /** Name used in logs. */
  readonly name: string;
  /** Executable (absolute path). */
  readonly command: string;
  /** Arguments. Never secrets: argv is visible to every local user in `ps`. */
  readonly args: readonly string[];
  /** Complete environment of the child. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Working directory. */
  readonly cwd: string;
}

/** Restart policy: exponential backoff, forgiven once a child stays up. */
export interface BackoffPolicy {
  /** Delay before the first restart. */
  readonly initialMs: number;
  /** Upper bound of the delay. */
  readonly maxMs: number;
  /** A child that ran this long counts as healthy: the next crash starts from {@link initialMs} again. */
  readonly resetAfterMs: number;
}

/** Default restart policy of `unibus up`. */
export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 30_000, resetAfterMs: 10_000 };

/** What the supervisor reports. */
export interface SupervisorEvents {
  /** One line a child wrote to stdout or stderr. */
  line(name: string, stream: "stdout" | "stderr", line: string): void;
  /** A supervisor event for humans (start, crash, restart, stop). */
  notice(message: string): void;
}

/** Options of {@link Supervisor}. */
export interface SupervisorOptions {
  readonly backoff?: BackoffPolicy;
  /** How long a child may take to drain after SIGTERM before SIGKILL. */
  readonly stopGraceMs?: number;
  /** Called with the running children's pids whenever one starts or exits (e.g. to record them in the home lock). */
  readonly onChildrenChanged?: (pids: readonly number[]) => void;
}

/** The delay before restart number `attempt` (0-based): initial · 2^attempt, capped. */
export function backoffDelay(policy: BackoffPolicy, attempt: number): number {
  return Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(attempt, 30));
}

interface Slot {
  readonly spec: ChildSpec;
  child: ChildProcess | undefined;
  exited: Promise<void> | undefined;
  startedAt: number;
  attempt: number;
  restartTimer: NodeJS.Timeout | undefined;
  restarts: number;
}

/** Descriptor of the lifeline pipe in every child. */
const LIFELINE_FD = 3;

/** Children alive in this process, killed if it exits abruptly (they run in their own process groups). */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const child of liveChildren) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }
  });
}

/**
 * Runs child processes, restarts crashed ones with exponential backoff, and
 * stops them in order (SIGTERM, grace, SIGKILL).
 *
 * Children get their own process group so a Ctrl-C at the terminal reaches
 * only `unibus up`, which then stops them deliberately; otherwise every
 * service would get SIGINT at once, racing the orderly shutdown.
 */
export class Supervisor {
  readonly #slots: Slot[];
  readonly #events: SupervisorEvents;
  readonly #backoff: BackoffPolicy;
  readonly #stopGraceMs: number;
  readonly #onChildrenChanged: ((pids: readonly number[]) => void) | undefined;
  #stopping = false;

  constructor(specs: readonly ChildSpec[], events: SupervisorEvents, opts: SupervisorOptions = {}) {
    this.#slots = specs.map((spec) => ({ spec, child: undefined, exited: undefined, startedAt: 0, attempt: 0, restartTimer: undefined, restarts: 0 }));
    this.#events = events;
    this.#backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.#stopGraceMs = opts.stopGraceMs ?? 10_000;
    this.#onChildrenChanged = opts.onChildrenChanged;
  }

  /** Starts every child. */
  start(): void {
    installExitHook();
    for (const slot of this.#slots) this.#launch(slot);
  }

  /** How often each child has been restarted. */
  restarts(): ReadonlyMap<string, number> {
    return new Map(this.#slots.map((s) => [s.spec.name, s.restarts]));
  }

  /** pids of the running children by name. */
  pids(): ReadonlyMap<string, number> {
    const out = new Map<string, number>();
    for (const s of this.#slots) if (s.child?.pid !== undefined && s.child.exitCode === null) out.set(s.spec.name, s.child.pid);
    return out;
  }

  #launch(slot: Slot): void {
    const { spec } = slot;
    // fd 3 is the lifeline: we never write to it, and the kernel closes our
    // end however we die (SIGKILL included), so the child sees EOF and exits
    // instead of running on as an orphan in its own process group.
    const child = spawn(spec.command, [...spec.args], {
      cwd: spec.cwd,
      env: { ...spec.env, [PARENT_LIFELINE_FD_ENV]: String(LIFELINE_FD) },
      stdio: ["ignore", "pipe", "pipe", "pipe"],
      detached: true,
    });
    child.stdio[LIFELINE_FD]?.on("error", () => undefined);
    slot.child = child;
    slot.startedAt = Date.now();
    liveChildren.add(child);
    this.#childrenChanged();
    for (const stream of ["stdout", "stderr"] as const) {
      const source = child[stream];
      if (!source) continue;
      createInterface({ input: source, crlfDelay: Infinity }).on("line", (line) => this.#events.line(spec.name, stream, line));
    }
    slot.exited = new Promise<void>((done) => {
      let finished = false;
      const onEnd = (code: number | null, signal: NodeJS.Signals | null, error?: Error): void => {
        if (finished) return;
        finished = true;
        liveChildren.delete(child);
        slot.child = undefined;
        this.#childrenChanged();
        done();
        this.#onExit(slot, code, signal, error);
      };
      child.once("error", (err) => onEnd(null, null, err));
      child.once("exit", (code, signal) => onEnd(code, signal));
    });
  }

  #childrenChanged(): void {
    this.#onChildrenChanged?.([...this.pids().values()]);
  }

  #onExit(slot: Slot, code: number | null, signal: NodeJS.Signals | null, error?: Error): void {
    if (this.#stopping) return;
    const name = slot.spec.name;
    const upFor = Date.now() - slot.startedAt;
    if (upFor >= this.#backoff.resetAfterMs) slot.attempt = 0;
    const delay = backoffDelay(this.#backoff, slot.attempt);
    slot.attempt += 1;
    slot.restarts += 1;
    const how = error ? `failed to start (${error.message})` : signal ? `was killed by ${signal}` : `exited with code ${code}`;
    this.#events.notice(`${name} ${how} after ${formatDuration(upFor)}; restarting in ${formatDuration(delay)} (restart #${slot.restarts})`);
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = undefined;
      if (!this.#stopping) this.#launch(slot);
    }, delay);
  }

  /**
   * Stops every child: SIGTERM to each (they drain), then SIGKILL to any
   * still running after the grace period. Resolves when all have exited.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    const waits: Promise<void>[] = [];
    for (const slot of this.#slots) {
      if (slot.restartTimer) clearTimeout(slot.restartTimer);
      slot.restartTimer = undefined;
      const child = slot.child;
      if (!child || !slot.exited) continue;
      const exited = slot.exited;
      child.kill("SIGTERM");
      waits.push(
        (async () => {
          let timer: NodeJS.Timeout | undefined;
          const timedOut = await Promise.race([
            exited.then(() => false),
            new Promise<boolean>((r) => {
              timer = setTimeout(() => r(true), this.#stopGraceMs);
            }),
          ]);
          clearTimeout(timer);
          if (timedOut) {
            this.#events.notice(`${slot.spec.name} did not stop within ${formatDuration(this.#stopGraceMs)}; killing it`);
            child.kill("SIGKILL");
            await exited;
          }
        })(),
      );
    }
    await Promise.all(waits);
  }
}

function formatDuration(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`;
}
