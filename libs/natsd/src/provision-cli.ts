/**
 * `npm run nats-server`: finds or provisions nats-server >= 2.15 and prints
 * where it is, so a fresh checkout can be made ready with one command.
 * `npm run nats-server -- --path` prints only the binary's path, for scripts
 * (the image build) that must run the very binary the tests and `unibus up` run.
 */
import { NatsServerNotFoundError } from "./errors.js";
import { findNatsServer } from "./provision.js";

async function main(args: readonly string[]): Promise<number> {
  const unknown = args.filter((a) => a !== "--path");
  if (unknown.length > 0) {
    process.stderr.write(`usage: npm run nats-server [-- --path] (unknown: ${unknown.join(" ")})\n`);
    return 2;
  }
  try {
    const found = await findNatsServer({ log: (msg) => process.stderr.write(`natsd: ${msg}\n`) });
    process.stdout.write(args.includes("--path") ? `${found.bin}\n` : `nats-server ${found.version} at ${found.bin} (${found.source})\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`${err instanceof NatsServerNotFoundError ? err.message : String(err)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
