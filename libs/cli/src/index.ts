export { runCli, COMMANDS, ROOT_HELP } from "./router.js";
export type { Command } from "./command.js";
export type { FailoverCheck } from "./commands/check.js";
export { CliError, ExitCode, UsageError } from "./errors.js";
export type { CliIo } from "./io.js";
export { processIo } from "./io.js";
export { EnvVar, ensurePrivateDir, parseEnvFile, renderEnvFile, resolveHome, serviceIdentityFile, writePrivateFile } from "./home.js";
export { DEFAULT_ADMIN_HANDLE, bootstrapAdmin } from "./commands/admin.js";
export { loadIdentityForCli } from "./identity-file.js";
export { provisionHome } from "./up/provision.js";
export type { ProvisionedHome, ProvisionedServices } from "./up/provision.js";
export type { HomeLayout } from "./home.js";
export { connectClient, connectToBus, requestError, resolveConnectionSettings } from "./connection.js";
export type { ConnectionSettings } from "./connection.js";
export {
  JETSTREAM_KEY_ENV,
  JS_SYNC_INTERVAL_ENV,
  SYNC_ALWAYS,
  bootstrapUserPermissions,
  buildServerConfig,
  calloutAuthorization,
  jetStreamSyncInterval,
  serviceUserPermissions,
} from "./up/server-config.js";
export type { AuthorizationFragment, BusPrincipals, BusServerConfigInput } from "./up/server-config.js";
export { ALL_SERVICES, ServiceName } from "./up/services.js";
export { NodeStartError, NodeStartErrorReason, STORE_CHECK_FILE, assertKeyOpensStore, clusterNodeConfig, startClusterNode } from "./cluster/node.js";
export { AdoptError, AdoptErrorReason, RETIRED_SUFFIX, adoptFirstNode, adoptableRecord } from "./cluster/adopt.js";
export type { AdoptFirstNodeOptions, AdoptFirstNodeResult } from "./cluster/adopt.js";
export type { ClusterNode, ClusterNodeOptions, RouteTls, UnlockKeys } from "./cluster/node.js";
export { PromoteError, PromoteErrorReason, StoreKind, applyPromotion, describeStep, planPromotion, promoteStreams, waitForCurrentReplicas } from "./cluster/promote.js";
export type { PromotionResult, PromotionStep, ReplicaStatus } from "./cluster/promote.js";
export { CLUSTER_FILE, STANDALONE_SUFFIX, promoteHome, readClusterRecord } from "./cluster/convert.js";
export type { ClusterRecord, PromoteHomeOptions, PromoteHomeResult } from "./cluster/convert.js";
export { JSZ_COPIES_QUERY, catchUpBlocker, leaderStreams, rebuildBlocker } from "./cluster/copies.js";
export type { Jsz, JszReplica, JszStream } from "./cluster/copies.js";
