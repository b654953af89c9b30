import { lstatSync, readFileSync } from "node:fs";
import { parseReplicaPsk, REPLICA_ID_PATTERN, ReplicaHandshakeError } from "@unibus/crypto";

/** Environment variables the gateway reads. PSK values are secrets: never logged. */
export const GatewayEnv = {
  psk: "UNIBUS_REPLICA_PSK",
  pskFile: "UNIBUS_REPLICA_PSK_FILE",
  previousPsk: "UNIBUS_REPLICA_PSK_PREVIOUS",
  previousPskFile: "UNIBUS_REPLICA_PSK_PREVIOUS_FILE",
  clusterName: "UNIBUS_CLUSTER_NAME",
  acceptorId: "UNIBUS_REPLICA_ID",
} as const;

/** The PSKs the acceptor accepts: the current one and, during a rotation, the previous one. */
export interface PskSet {
  readonly current: Uint8Array;
  readonly previous?: Uint8Array;
}

/** A gateway configuration that must not start; the message never contains a secret. */
export class GatewayConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GatewayConfigError";
  }
}

/** What {@link loadGatewayConfig} found; `psk` undefined means the handshake answers AuthRequired. */
export interface GatewayConfig {
  readonly psk?: PskSet;
  readonly clusterName?: string;
  readonly acceptorId?: string;
}

function readPskFile(variable: string, path: string): string {
  // lstat, not stat: a symlink could point the check at one file and the read
  // at another; a key file is a regular file of its own.
  let st;
  try {
    st = lstatSync(path);
  } catch {
    throw new GatewayConfigError(`${variable}: cannot read the PSK file`);
  }
  if (!st.isFile()) throw new GatewayConfigError(`${variable}: the PSK file must be a regular file`);
  // Any group/other bit means another account may read the key.
  if ((st.mode & 0o077) !== 0) throw new GatewayConfigError(`${variable}: the PSK file must have mode 0600 (has ${(st.mode & 0o777).toString(8)})`);
  return readFileSync(path, "utf8");
}

function onePsk(env: NodeJS.ProcessEnv, valueVar: string, fileVar: string): Uint8Array | undefined {
  const value = env[valueVar];
  const file = env[fileVar];
  if (value !== undefined && value !== "" && file !== undefined && file !== "") throw new GatewayConfigError(`set ${valueVar} or ${fileVar}, not both`);
  const text = value !== undefined && value !== "" ? value : file !== undefined && file !== "" ? readPskFile(fileVar, file) : undefined;
  if (text === undefined) return undefined;
  try {
    return parseReplicaPsk(text);
  } catch (err) {
    // parseReplicaPsk never quotes its input, so its message is safe to pass on.
    throw new GatewayConfigError(`${valueVar}: ${err instanceof ReplicaHandshakeError ? err.message : "invalid PSK"}`);
  }
}

/**
 * Reads the gateway's configuration from the environment. A PSK that is set
 * but unusable (short, not hex/base64, a file readable by others) is an error,
 * not "no PSK": a typo must not silently turn the handshake off.
 *
 * @throws GatewayConfigError
 */
export function loadGatewayConfig(env: NodeJS.ProcessEnv): GatewayConfig {
  const current = onePsk(env, GatewayEnv.psk, GatewayEnv.pskFile);
  const previous = onePsk(env, GatewayEnv.previousPsk, GatewayEnv.previousPskFile);
  if (current === undefined && previous !== undefined) throw new GatewayConfigError(`${GatewayEnv.previousPsk} needs a current PSK`);
  const clusterName = env[GatewayEnv.clusterName];
  const acceptorId = env[GatewayEnv.acceptorId];
  if (acceptorId !== undefined && acceptorId !== "" && !REPLICA_ID_PATTERN.test(acceptorId)) {
    throw new GatewayConfigError(`${GatewayEnv.acceptorId} must match ${REPLICA_ID_PATTERN.source}`);
  }
  return {
    ...(current === undefined ? {} : { psk: previous === undefined ? { current } : { current, previous } }),
    ...(clusterName === undefined || clusterName === "" ? {} : { clusterName }),
    ...(acceptorId === undefined || acceptorId === "" ? {} : { acceptorId }),
  };
}
