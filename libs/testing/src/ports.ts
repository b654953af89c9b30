import { createServer } from "node:net";

/** Ports this process already handed out: the kernel may offer a just-closed port again. */
const handedOut = new Set<number>();

function probe(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const address = srv.address();
      const port = typeof address === "object" && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago, and never one this
 * process was given before: a cluster's client and route ports are picked
 * before any server binds them, and two picks that got the same freed port
 * made a node fail with "address already in use". Cluster routes must be
 * known before the nodes start, so ports cannot all be left to `-1`.
 */
export async function freeLoopbackPort(): Promise<number> {
  for (let attempt = 0; attempt < 64; attempt++) {
    const port = await probe();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("no loopback port that this process has not already handed out");
}
