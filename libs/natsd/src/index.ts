export { EnvRef, envRef, mergeNatsConfig, renderNatsConfig } from "./config.js";
export type { NatsConfig, NatsConfigMap, NatsConfigValue } from "./config.js";
export { NatsConfigError, NatsServerNotFoundError, NatsServerStartError } from "./errors.js";
export { NatsServerFile, NatsServerOrphanError, PidIdentity, SINGLE_NODE_LAME_DUCK, identifyServerPid, stopOrphanNatsServer } from "./orphan.js";
export type { OrphanOutcome, StopOrphanOptions } from "./orphan.js";
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
export { WATCHDOG_SCRIPT, startBusWatchdog } from "./watchdog.js";
export type { BusWatchdog } from "./watchdog.js";
export { MIN_NATS_SERVER_VERSION, isAtLeast, parseNatsServerVersion } from "./version.js";
