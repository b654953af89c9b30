export { EnvRef, envRef, mergeNatsConfig, renderNatsConfig } from "./config.js";
export type { NatsConfig, NatsConfigMap, NatsConfigValue } from "./config.js";
export { NatsConfigError, NatsServerNotFoundError, NatsServerStartError } from "./errors.js";
export { startNatsServer } from "./process.js";
export type { NatsServerProcess, StartNatsServerOptions } from "./process.js";
export {
  NatsServerSource,
  debianMirrorFromSources,
  defaultNatsToolsDir,
  findNatsServer,
  findRepoRoot,
} from "./provision.js";
export type { FindNatsServerOptions, NatsServerBinary } from "./provision.js";
export { MIN_NATS_SERVER_VERSION, isAtLeast, parseNatsServerVersion } from "./version.js";
