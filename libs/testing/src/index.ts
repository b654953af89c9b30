export { startTestCluster } from "./cluster.js";
export type { TestCluster, TestClusterOptions } from "./cluster.js";
export { freeLoopbackPort } from "./ports.js";
export { rejectionOf } from "./rejection.js";
export { startTestServer } from "./server.js";
export { spawnWatched } from "./watched-process.js";
export type { SpawnWatchedOptions, WatchedProcess, WatchedStream } from "./watched-process.js";
export type { TestServer, TestServerOptions } from "./server.js";
