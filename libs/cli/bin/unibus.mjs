#!/usr/bin/env node
// The CLI is TypeScript run through tsx's loader, so `npx unibus` works right
// after `npm install` with no build step. `unibus up` (what `npm start` runs)
// is the exception: it stays running next to the bus, so it runs as one
// plain JavaScript bundle made on demand (node_modules/.cache/unibus/), which
// holds about half the memory of the loader and starts faster.
import { mkdir } from "node:fs/promises";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const main = fileURLToPath(new URL("../src/main.ts", import.meta.url));

async function bundledUp() {
  if (process.argv[2] !== "up" || process.env.UNIBUS_CLI_LOADER === "tsx") return undefined;
  try {
    const { bundleScript } = await import("./bundle.mjs");
    const dir = `${root}node_modules/.cache/unibus`;
    await mkdir(dir, { recursive: true });
    return (await bundleScript({ entry: main, outFile: `${dir}/cli.mjs`, root })).path;
  } catch (err) {
    // A failed bundle must not stop the bus from starting: the loader still works.
    process.stderr.write(`[unibus up] cannot bundle the CLI (${String(err).split("\n")[0]}); using the TypeScript loader\n`);
    return undefined;
  }
}

const bundle = await bundledUp();
if (bundle !== undefined) {
  await import(pathToFileURL(bundle).href);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/main.ts");
}
