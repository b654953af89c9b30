import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveHome } from "./home.js";
import type { HomeLayout } from "./home.js";
import { runCli } from "./router.js";
import { recordingIo } from "./test-io.js";

/** A fresh temp dir for a command-line test, with `UNIBUS_HOME` pointing at `<tmp>/home` (not created). */
export interface TempCliHome {
  /** The temp dir, also the commands' cwd; the caller removes it. */
  readonly tmp: string;
  readonly home: HomeLayout;
  /** `UNIBUS_HOME` and the extra variables given. */
  readonly env: Record<string, string>;
}

/** Makes a {@link TempCliHome} under the OS temp dir; `extraEnv` may name paths inside `tmp`. */
export async function tempCliHome(prefix: string, extraEnv: (tmp: string) => Record<string, string>): Promise<TempCliHome> {
  const tmp = await mkdtemp(join(tmpdir(), prefix));
  const env = { UNIBUS_HOME: join(tmp, "home"), ...extraEnv(tmp) };
  return { tmp, home: resolveHome(env, tmp), env };
}

/** Runs `unibus <argv>` in memory; its exit code and everything it printed (stdout, then stderr). */
export async function runCliRecorded(argv: readonly string[], opts: { env: Record<string, string>; cwd: string }): Promise<{ code: number; out: string }> {
  const io = recordingIo(opts);
  const code = await runCli(argv, io);
  return { code, out: io.all() };
}
