import { readFile, rename, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { build, stop } from "esbuild";

/** What {@link embeddedBundle} produced. */
export interface EmbeddedBundle {
  /** The bundled script (plain JavaScript, no loader needed). */
  readonly path: string;
  /** False when an up-to-date bundle from an earlier start was reused. */
  readonly built: boolean;
  readonly ms: number;
}

/**
 * The embedded services' entry script bundled into one JavaScript file under
 * `outDir`, rebuilt only when a source it was built from changed (or is
 * gone). Running plain JavaScript instead of TypeScript through a loader
 * halves the services' memory and makes a restart faster; a clone still needs
 * no build step, because `unibus up` makes the bundle on demand.
 *
 * `outDir` is the state dir's private run directory: whoever can write the
 * bundle runs code as every service, so it must be no more writable than
 * the identities the services load.
 */
export async function embeddedBundle(entry: string, outDir: string, root: string): Promise<EmbeddedBundle> {
  const started = Date.now();
  const path = join(outDir, "embedded-services.mjs");
  const metaPath = join(outDir, "embedded-services.meta.json");
  if (await upToDate(path, metaPath, root)) return { path, built: false, ms: Date.now() - started };
  const result = await build({
    entryPoints: [entry],
    outfile: path,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    absWorkingDir: root,
    metafile: true,
    logLevel: "silent",
    // CommonJS dependencies (pino, ajv) call require() for Node built-ins;
    // an ES module has no require of its own.
    banner: { js: 'import { createRequire as __unibusCreateRequire } from "node:module"; const require = __unibusCreateRequire(import.meta.url);' },
  }).finally(() => {
    // esbuild keeps a helper process (~70 MB) alive for the next build; `up`
    // builds once, and the next esbuild call (the TypeScript loader's) starts a new one.
    void stop();
  });
  const tmp = `${metaPath}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(Object.keys(result.metafile.inputs)), { mode: 0o600 });
  await rename(tmp, metaPath);
  return { path, built: true, ms: Date.now() - started };
}

/** True if the bundle exists and is newer than every input it was built from. */
async function upToDate(path: string, metaPath: string, root: string): Promise<boolean> {
  try {
    const built = (await stat(path)).mtimeMs;
    const inputs = JSON.parse(await readFile(metaPath, "utf8")) as unknown;
    if (!Array.isArray(inputs) || inputs.length === 0) return false;
    for (const input of inputs) {
      if (typeof input !== "string") return false;
      if ((await stat(resolve(root, input))).mtimeMs >= built) return false;
    }
    return true;
  } catch {
    return false;
  }
}
