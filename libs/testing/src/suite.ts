// Apart from the package's index: importing vitest outside its runner throws,
// and benches and test stacks import the index from plain processes.
import { afterAll, beforeAll } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { startConnectedCluster } from "./cluster.js";
import type { ConnectedCluster, TestCluster, TestClusterOptions } from "./cluster.js";

/** A {@link ConnectedCluster} that a test file's suite shares: set once its `beforeAll` ran. */
export interface SuiteCluster {
  readonly cluster: TestCluster;
  readonly conns: NatsConnection[];
}

/**
 * Registers `beforeAll`/`afterAll` hooks that start a
 * {@link startConnectedCluster} for the enclosing suite and stop it after;
 * its fields throw until the cluster is up.
 */
export function connectedClusterForSuite(size = 3, opts: TestClusterOptions = {}): SuiteCluster {
  let started: ConnectedCluster | undefined;
  beforeAll(async () => {
    started = await startConnectedCluster(size, opts);
  }, 90_000);
  afterAll(async () => {
    await started?.stop();
  });
  const up = (): ConnectedCluster => {
    if (started === undefined) throw new Error("the suite's cluster is not started (use it inside a test or hook)");
    return started;
  };
  return {
    get cluster() {
      return up().cluster;
    },
    get conns() {
      return up().conns;
    },
  };
}
