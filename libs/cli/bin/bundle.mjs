// Bundles a TypeScript entry script and everything it imports into one plain
// JavaScript file, on demand, reusing the last bundle while none of its
// inputs changed. Plain JavaScript (no loader) so bin/unibus.mjs can use it
// before, and instead of, the TypeScript loader.
import { readFile, rename, stat, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { build, stop } from "esbuild";

/** Spelled in pieces so the rewrite below never rewrites this file's own code. */
const META_URL = ["import", "meta", "url"].join(".");

/**
 * Each bundled module keeps its own module URL (the URL of its source
 * file): the code finds files beside its source (the lifeline preload, the
 * watchdog script, the repository root), and the bundle lives elsewhere.
 */
const ownImportMetaUrl = {
  name: "own-import-meta-url",
  setup(b) {
    b.onLoad({ filter: /\.(ts|mts|js|mjs)$/ }, async (args) => {
      if (args.path.includes("/node_modules/")) return undefined;
      const source = await readFile(args.path, "utf8");
      if (!source.includes(META_URL)) return undefined;
      const loader = /\.m?ts$/.test(args.path) ? "ts" : "js";
      return { contents: source.replaceAll(META_URL, JSON.stringify(pathToFileURL(args.path).href)), loader };
    });
  },
};

/** True if `outFile` exists and is newer than every input listed in `metaFile`. */
async function upToDate(outFile, metaFile, root) {
  try {
    const built = (await stat(outFile)).mtimeMs;
    const inputs = JSON.parse(await readFile(metaFile, "utf8"));
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

/**
 * Bundles `entry` to `outFile` unless an up-to-date bundle is there.
 * @param {{ entry: string, outFile: string, root: string }} opts
 * @returns {Promise<{ path: string, built: boolean, ms: number }>}
 */
export async function bundleScript({ entry, outFile, root }) {
  const started = Date.now();
  const metaFile = `${outFile}.inputs.json`;
  if (await upToDate(outFile, metaFile, root)) return { path: outFile, built: false, ms: Date.now() - started };
  try {
    const result = await build({
      entryPoints: [entry],
      outfile: outFile,
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      absWorkingDir: root,
      metafile: true,
      logLevel: "silent",
      plugins: [ownImportMetaUrl],
      // esbuild finds its native binary from its own package path: it is loaded from node_modules, never bundled.
      external: ["esbuild"],
      // CommonJS dependencies (pino, ajv) call require() for Node built-ins;
      // an ES module has no require of its own.
      banner: { js: `import { createRequire as __unibusCreateRequire } from "node:module"; const require = __unibusCreateRequire(${META_URL});` },
    });
    const tmp = `${metaFile}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(Object.keys(result.metafile.inputs)), { mode: 0o600 });
    await rename(tmp, metaFile);
  } finally {
    // esbuild keeps a helper process (~70 MB) for the next build; there is none.
    await stop();
  }
  return { path: outFile, built: true, ms: Date.now() - started };
}
