export { GatewayConfigError, GatewayEnv, loadGatewayConfig } from "./config.js";
export type { GatewayConfig, PskSet } from "./config.js";
export { HANDSHAKE_MAX_PAYLOAD_BYTES, ReplicaBucket, SESSION_TTL_MS, handshakeHandlers } from "./handlers/handshake.js";
export type { HandshakeDeps } from "./handlers/handshake.js";
export { createReplicaGatewayService, DEFAULT_ACCEPTOR_ID, replicaGatewayService } from "./service.js";
export type { ReplicaGatewayOptions, RunningReplicaGateway } from "./service.js";
export { ClusterCore, LifecycleBucket, lifecycleHandlers, TICKET_TTL_MS } from "./handlers/lifecycle.js";
export type { LifecycleDeps } from "./handlers/lifecycle.js";
