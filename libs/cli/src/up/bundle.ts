import { join } from "node:path";
import { bundleScript } from "../../bin/bundle.mjs";

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
  return bundleScript({ entry, outFile: join(outDir, "embedded-services.mjs"), root });
}
