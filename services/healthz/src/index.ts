export { BUS_SERVICES, BUS_STREAMS, USERS_BUCKET } from "./bus.js";
export type { RequiredStream } from "./bus.js";
export { DEFAULT_HEALTHZ_LISTEN, HealthzEnv, loadHealthzOptions } from "./config.js";
export { HealthPath, parseListenAddress } from "./http.js";
export type { ListenAddress } from "./http.js";
export { buildPosture, createHealthzService, healthzService } from "./service.js";
export type { AtRestDeclaration, HealthzOptions, RunningHealthz } from "./service.js";
