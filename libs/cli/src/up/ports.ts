import { createServer } from "node:net";
import { CliError } from "../errors.js";

/**
 * Fails with a clear message when `host:port` is taken, before nats-server
 * would fail with a line buried in its log.
 */
export async function assertPortFree(host: string, port: number, what: string, envVar: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const server = createServer();
    server.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE" || err.code === "EACCES") {
        reject(
          new CliError(
            `${what} port ${port} on ${host} is not available (${err.code}): another nats-server or \`unibus up\` may be running.\n` +
              `Stop it, or pick another port with ${envVar}=<port>.`,
          ),
        );
      } else {
        reject(err);
      }
    });
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve()));
  });
}

/** Reads a port number from the environment, with a default; a bad value is a usage error. */
export function portFromEnv(env: Readonly<Record<string, string | undefined>>, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new CliError(`${name} must be a port number (1-65535), got ${JSON.stringify(raw)}`, { exitCode: 2 });
  }
  return port;
}

/**
 * A port free on `host` right now, chosen by the kernel, and none of
 * `avoid`. `up` picks the healthz port once and passes it down, so a
 * restarted healthz child binds the same port and the URL written to the
 * env file stays valid. `avoid` holds the ports `up` was given for other
 * listeners that are not bound yet (nats-server's client, monitoring and
 * WebSocket ports): the kernel may hand out a port another process picked
 * the same way and released a moment ago, and healthz would then find it
 * taken on every restart. `pick` is the kernel's choice (tests replace it).
 */
export async function freePort(host: string, avoid: readonly number[] = [], pick: (host: string) => Promise<number> = kernelPort): Promise<number> {
  for (let attempt = 0; attempt < 32; attempt++) {
    const port = await pick(host);
    if (!avoid.includes(port)) return port;
  }
  throw new Error(`no free port on ${host} outside ${avoid.join(", ")}`);
}

function kernelPort(host: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("no port assigned"))));
    });
  });
}
