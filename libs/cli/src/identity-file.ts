import { IdentityFileError, loadIdentityFile } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { CliError } from "./errors.js";

/**
 * Loads an identity file, turning each {@link IdentityFileError} code into a
 * message that says how to fix it. Never creates a file (architecture §3).
 */
export async function loadIdentityForCli(path: string): Promise<Identity> {
  try {
    return await loadIdentityFile(path);
  } catch (err) {
    if (err instanceof IdentityFileError) {
      switch (err.code) {
        case "missing":
          throw new CliError(
            `identity file not found: ${path}\n` +
              "Create one with `npx unibus identity create --out <path>`, or start the local bus with `npx unibus up`.",
            { cause: err },
          );
        case "insecure-mode":
          throw new CliError(`${err.message}\nThe file holds a secret key: run \`chmod 600 ${path}\`.`, { cause: err });
        default:
          throw new CliError(err.message, { cause: err });
      }
    }
    throw err;
  }
}
