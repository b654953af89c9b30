import { NatsServerNotFoundError, NatsServerOrphanError, findNatsServer, stopOrphanNatsServer } from "@unibus/natsd";
import { CliError } from "../errors.js";
import { ensurePrivateDir, resolveHome } from "../home.js";
import type { CliIo } from "../io.js";
import { acquireHomeLock } from "../up/lock.js";
import type { StoreContext } from "./operations.js";

/**
 * Runs `op` on a stopped bus: the home lock keeps `unibus up` (and a second
 * store command) off the store while it is rewritten.
 */
export async function onStoppedBus<T>(io: CliIo, command: string, op: (ctx: StoreContext) => Promise<T>): Promise<T> {
  const home = resolveHome(io.env, io.cwd);
  const say = (line: string): void => io.out(`[unibus ${command}] ${line}`);
  await ensurePrivateDir(home.root);
  const lock = await acquireHomeLock(home.lockFile);
  try {
    try {
      const outcome = await stopOrphanNatsServer(home.serverDir, { log: say });
      if (outcome.action === "stopped") say(`stopped a leftover nats-server (pid ${outcome.pid})`);
    } catch (err) {
      if (err instanceof NatsServerOrphanError) throw new CliError(err.message, { cause: err });
      throw err;
    }
    let bin: string;
    try {
      bin = (await findNatsServer({ log: say })).bin;
    } catch (err) {
      if (err instanceof NatsServerNotFoundError) throw new CliError(err.message, { cause: err });
      throw err;
    }
    return await op({ home, bin, say });
  } finally {
    await lock.release();
  }
}
