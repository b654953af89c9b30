// `npm run panel:build`: bundles the admin panel into libs/panel/dist from
// the repo's own sources (no CDN, nothing fetched when it runs), and prints
// the raw and gzipped sizes against the 150 KB gzip budget.
import { copyFile, mkdir, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";
import type { Plugin } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const appDir = join(root, "src", "app");
const dist = join(root, "dist");
/** Gzipped bytes the whole bundle may take. */
const GZIP_BUDGET = 150 * 1024;

/**
 * Swaps a relative import `./x.js` for its `./x.browser.ts` sibling when one
 * exists: @unibus/crypto keeps node:crypto for speed in Node and has
 * @noble-based twins of those few modules, while the envelope and signing
 * code around them is bundled unchanged.
 */
const browserSiblings: Plugin = {
  name: "unibus-browser-siblings",
  setup(b) {
    b.onResolve({ filter: /^\.\.?\/.*\.js$/ }, async (args) => {
      const candidate = resolve(args.resolveDir, args.path.replace(/\.js$/, ".browser.ts"));
      if (candidate === args.importer) return undefined;
      try {
        await stat(candidate);
        return { path: candidate };
      } catch {
        return undefined;
      }
    });
  },
};

/** Fails the build on any Node built-in: in the browser it would be a runtime error. */
const noNodeBuiltins: Plugin = {
  name: "unibus-no-node-builtins",
  setup(b) {
    b.onResolve({ filter: /^node:/ }, (args) => ({ errors: [{ text: `${args.path} imported by ${args.importer}: not available in a browser` }] }));
  },
};

function kb(n: number): string {
  return `${(n / 1024).toFixed(1)} KB`;
}

async function main(): Promise<void> {
  await rm(dist, { recursive: true, force: true });
  await mkdir(dist, { recursive: true });
  await build({
    entryPoints: { panel: join(appDir, "main.ts") },
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    conditions: ["unibus-browser"],
    minify: true,
    legalComments: "none",
    outdir: dist,
    plugins: [noNodeBuiltins, browserSiblings],
    logLevel: "warning",
  });
  await copyFile(join(appDir, "index.html"), join(dist, "index.html"));
  await copyFile(join(appDir, "panel.css"), join(dist, "panel.css"));
  let raw = 0;
  let gz = 0;
  for (const name of (await readdir(dist)).sort()) {
    const bytes = await readFile(join(dist, name));
    const z = gzipSync(bytes, { level: 9 }).byteLength;
    raw += bytes.byteLength;
    gz += z;
    console.log(`  ${name.padEnd(12)} ${kb(bytes.byteLength).padStart(9)} raw ${kb(z).padStart(9)} gzip`);
  }
  console.log(`panel bundle: ${kb(raw)} raw, ${kb(gz)} gzipped (budget ${kb(GZIP_BUDGET)}) -> ${dist}`);
  await writeFile(join(dist, "build.json"), `${JSON.stringify({ rawBytes: raw, gzipBytes: gz }, null, 2)}\n`);
  if (gz > GZIP_BUDGET) throw new Error(`the panel bundle is ${kb(gz)} gzipped, over the ${kb(GZIP_BUDGET)} budget`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});

