import { createServer } from "node:net";

/**
 * A TCP port on 127.0.0.1 that was free a moment ago. Cluster routes must be
 * known before the nodes start, so ports cannot all be left to `-1`.
 */
export function freeLoopbackPort(): Promise<number> {
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
