export { GatewayConfigError, GatewayEnv, loadGatewayConfig } from "./config.js";
export type { GatewayConfig, PskSet } from "./config.js";
export { HANDSHAKE_MAX_PAYLOAD_BYTES, ReplicaBucket, SESSION_TTL_MS, handshakeEndpoints } from "./handshake.js";
export type { HandshakeDeps } from "./handshake.js";
export { createReplicaGatewayService, DEFAULT_ACCEPTOR_ID, replicaGatewayService } from "./service.js";
export type { ReplicaGatewayOptions, RunningReplicaGateway } from "./service.js";
export { ClusterCore, LifecycleBucket, lifecycleEndpoints, TICKET_TTL_MS } from "./lifecycle.js";
export type { LifecycleDeps } from "./lifecycle.js";
