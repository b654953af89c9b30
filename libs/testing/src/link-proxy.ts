import { Socket, createServer } from "node:net";
import type { Server } from "node:net";

/** A TCP proxy on loopback that a test can cut and heal, e.g. one route link of a cluster. */
export interface LinkProxy {
  /** The port it listens on (127.0.0.1). */
  readonly port: number;
  /** True between {@link LinkProxy.cut} and {@link LinkProxy.heal}. */
  readonly isCut: boolean;
  /** Connections forwarded so far (a test can tell traffic really went through). */
  readonly accepted: number;
  /** Drops every open connection and refuses new ones until {@link LinkProxy.heal}. */
  cut(): void;
  /** Forwards again. */
  heal(): void;
  /** Closes the listener and every connection. Idempotent. */
  close(): Promise<void>;
}

/**
 * Forwards every connection on a fresh loopback port to `127.0.0.1:targetPort`,
 * byte for byte (TLS passes through end to end). A partition is a cut link:
 * open connections are destroyed and new ones closed at once, so both sides
 * see the peer gone, as they would when a network drops between them.
 */
export async function startLinkProxy(targetPort: number): Promise<LinkProxy> {
  const pairs = new Set<[Socket, Socket]>();
  let cut = false;
  let accepted = 0;
  const server: Server = createServer((inbound) => {
    if (cut) {
      inbound.destroy();
      return;
    }
    accepted++;
    const outbound = new Socket();
    const pair: [Socket, Socket] = [inbound, outbound];
    pairs.add(pair);
    const drop = (): void => {
      pairs.delete(pair);
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on("error", drop).on("close", drop);
    outbound.on("error", drop).on("close", drop);
    outbound.connect(targetPort, "127.0.0.1", () => {
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  let closed: Promise<void> | undefined;
  const dropAll = (): void => {
    for (const [a, b] of pairs) {
      a.destroy();
      b.destroy();
    }
    pairs.clear();
  };
  return {
    port,
    get isCut() {
      return cut;
    },
    get accepted() {
      return accepted;
    },
    cut() {
      cut = true;
      dropAll();
    },
    heal() {
      cut = false;
    },
    close() {
      closed ??= new Promise<void>((resolve) => {
        dropAll();
        server.close(() => resolve());
      });
      return closed;
    },
  };
}
