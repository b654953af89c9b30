/**
 * `npm run nats-server`: finds or provisions nats-server >= 2.15 and prints
 * where it is, so a fresh checkout can be made ready with one command.
 */
import { NatsServerNotFoundError } from "./errors.js";
import { findNatsServer } from "./provision.js";

async function main(): Promise<number> {
  try {
    const found = await findNatsServer({ log: (msg) => process.stderr.write(`natsd: ${msg}\n`) });
    process.stdout.write(`nats-server ${found.version} at ${found.bin} (${found.source})\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`${err instanceof NatsServerNotFoundError ? err.message : String(err)}\n`);
    return 1;
  }
}

process.exitCode = await main();
