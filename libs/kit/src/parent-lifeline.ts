import { Socket } from "node:net";

/**
 * Environment variable naming the file descriptor of the pipe a supervisor
 * holds open for as long as it lives. Unset = no supervisor to watch (compose,
 * a service started by hand).
 */
export const PARENT_LIFELINE_FD_ENV = "UNIBUS_PARENT_FD";

/** The lifeline variable is set but unusable. */
export class ParentLifelineError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ParentLifelineError";
  }
}

/** A watched lifeline; `stop` detaches it (the process exits on its own terms). */
export interface ParentLifeline {
  stop(): void;
}

/**
 * Calls `onParentGone` once when the supervisor's end of the lifeline pipe
 * closes. The kernel closes it whatever killed the supervisor (SIGKILL, OOM),
 * so an orphaned service notices at once instead of serving a bus whose
 * owner is gone and holding its port against the next start.
 *
 * Returns undefined when `env` names no lifeline.
 *
 * @throws ParentLifelineError when the variable is set but is not a usable
 *   descriptor: a supervised process that cannot watch its parent refuses to
 *   run rather than risk outliving it.
 */
export function watchParentLifeline(env: NodeJS.ProcessEnv, onParentGone: () => void): ParentLifeline | undefined {
  const raw = env[PARENT_LIFELINE_FD_ENV];
  if (raw === undefined || raw === "") return undefined;
  // 0-2 are stdio; a lifeline there would be confused with the log streams.
  if (!/^[1-9][0-9]*$/.test(raw) || Number(raw) < 3) {
    throw new ParentLifelineError(`${PARENT_LIFELINE_FD_ENV} must be a file descriptor >= 3, got ${JSON.stringify(raw)}`);
  }
  let socket: Socket;
  try {
    socket = new Socket({ fd: Number(raw), readable: true, writable: false });
  } catch (err) {
    throw new ParentLifelineError(`${PARENT_LIFELINE_FD_ENV}=${raw} is not an open pipe: ${(err as Error).message}`, { cause: err });
  }
  let fired = false;
  const gone = (): void => {
    if (fired) return;
    fired = true;
    onParentGone();
  };
  // The supervisor never writes; any end, error or close means it is gone.
  socket.on("data", () => undefined);
  socket.once("end", gone);
  socket.once("close", gone);
  socket.once("error", gone);
  // The lifeline alone must not keep a finished process alive.
  socket.unref();
  return {
    stop() {
      fired = true;
      socket.destroy();
    },
  };
}
