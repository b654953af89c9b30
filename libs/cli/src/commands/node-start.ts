import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { unlockWrappedCuk } from "@unibus/crypto";
import { findNatsServer, NatsServerNotFoundError } from "@unibus/natsd";
import type { NatsConfig } from "@unibus/natsd";
import { loadNodeIdentity, readNodeClusterInfo, readNodeUnlockKey, readWrappedCuk } from "@unibus/sdk";
import { stringFlag } from "../args.js";
import type { ParsedFlags } from "../args.js";
import { startClusterNode } from "../cluster/node.js";
import type { ClusterNode, UnlockKeys } from "../cluster/node.js";
import { parsedCommand } from "../command.js";
import type { Command } from "../command.js";
import { connectionHelp, connectionOptions, requestError, resolveConnectionSettings } from "../connection.js";
import { CliError, ExitCode, UsageError } from "../errors.js";
import type { CliIo } from "../io.js";
import { readSecretInput } from "./cluster.js";

/** What `node start` needs from the node commands (the handshake, the join): passed in, so this file does not import node.ts back. */
export interface NodeStartDeps {
  /** The node's home directory from `--home` or `$UNIBUS_NODE_HOME`. */
  homeOf(flags: ParsedFlags, io: CliIo, command: string): string;
  /** The handshake and the join through `nc`: the node's cluster unlock key. */
  joinForKey(call: { io: CliIo; home: string; flags: ParsedFlags; server: string; tlsCa: string | undefined }): Promise<Uint8Array>;
  wrapHome<T>(p: Promise<T>): Promise<T>;
}

const COMMAND = "node start";
const HOST_PORT = /^[^\s:]+:\d{1,5}$/;

const usage = [
  "Usage: unibus node start [--home PATH] --listen HOST:PORT --routes URL[,URL…] --port N --bus-config PATH",
  "                         [--host H] [--monitor-port N] [--route-tls-dir DIR] [--recovery-secret-file PATH]",
  "",
  "Starts this node's nats-server as a member of the cluster, on every boot:",
  "  1. joins through a running node's client port (--server or UNIBUS_URL):",
  "     the PSK handshake, then the join, which returns the node's cluster",
  "     unlock key (CUK) sealed to the node; only an UP node gets it;",
  "  2. derives the store key from the node unlock key in the home and the CUK;",
  "  3. starts nats-server with that key in its environment only, refusing a key",
  "     that does not open the node's existing store.",
  "Stays in the foreground; Ctrl-C stops the node.",
  "",
  "Cold start (no gateway alive anywhere): --recovery-secret-file PATH (0600,",
  "or - for standard input) opens the node's wrapped CUK kept in its home",
  "instead of asking the cluster.",
].join("\n");

const options = {
  ...connectionOptions,
  home: { type: "string" },
  listen: { type: "string" },
  routes: { type: "string" },
  port: { type: "string" },
  host: { type: "string" },
  "monitor-port": { type: "string" },
  "bus-config": { type: "string" },
  "route-tls-dir": { type: "string" },
  "recovery-secret-file": { type: "string" },
} as const;

function portOf(flags: ParsedFlags, name: string): number | undefined {
  const raw = stringFlag(flags, name);
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 65_535) throw new UsageError(`--${name} must be a port number`, COMMAND);
  return n;
}

function requiredFlag(flags: ParsedFlags, name: string): string {
  const v = stringFlag(flags, name);
  if (v === undefined || v === "") throw new UsageError(`missing --${name}`, COMMAND);
  return v;
}

/** The bus's accounts and authorization as JSON (public keys only), as `unibus cluster bus-config` writes it. */
async function readBusConfig(path: string): Promise<NatsConfig> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new CliError(`cannot read the bus config ${path}: ${(err as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed) || !("authorization" in parsed || "accounts" in parsed)) {
    throw new CliError(`${path} is not a bus config (no accounts or authorization); write one with unibus cluster bus-config`);
  }
  return parsed as NatsConfig;
}

/**
 * The node's two unlock keys: the NUK from its home, and the CUK from the
 * join through a running node (every boot) or, with `recoveryFile`, from the
 * home's wrapped copy under the operator's recovery secret (no gateway alive).
 */
export async function nodeUnlockKeys(
  deps: NodeStartDeps,
  call: { io: CliIo; flags: ParsedFlags; home: string; nodeId: string; recoveryFile: string | undefined; command: string },
): Promise<UnlockKeys> {
  const { io, flags, home, recoveryFile } = call;
  const nuk = await deps.wrapHome(readNodeUnlockKey(home));
  if (recoveryFile !== undefined) {
    // No gateway to ask: the operator's recovery secret opens the copy the gateway wrapped at commit.
    const secret = await readSecretInput(io, recoveryFile === "-" ? undefined : recoveryFile, "recovery secret", call.command);
    const identity = await deps.wrapHome(loadNodeIdentity(home));
    const wrapped = await deps.wrapHome(readWrappedCuk(home));
    try {
      return { nuk, cuk: unlockWrappedCuk(secret, wrapped, call.nodeId, identity.principal) };
    } catch (err) {
      throw new CliError(`the recovery secret does not open this node's wrapped unlock key: ${(err as Error).message}`, { cause: err });
    }
  }
  const settings = await resolveConnectionSettings(flags, io);
  return { nuk, cuk: await deps.joinForKey({ io, home, flags, server: settings.server, tlsCa: settings.tlsCa }) };
}

/** Resolves on SIGINT/SIGTERM or when the server exits by itself. */
function untilStopped(node: ClusterNode): Promise<"signal" | "server-exited"> {
  return new Promise((done) => {
    const onSignal = (): void => {
      cleanup();
      done("signal");
    };
    const cleanup = (): void => {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    void node.server.exited.then(() => {
      cleanup();
      done("server-exited");
    });
  });
}

/** `unibus node start`. */
export function nodeStartCommand(deps: NodeStartDeps): Command {
  const help = [
    usage,
    "",
    "Options:",
    "  --home PATH                the node home (default: $UNIBUS_NODE_HOME)",
    "  --listen HOST:PORT         this node's route listen address",
    "  --routes URL[,URL…]        route URLs of the other nodes (nats-route://host:port)",
    "  --port N                   client port; --host H its address (default 127.0.0.1)",
    "  --monitor-port N           HTTP monitoring on 127.0.0.1:N",
    "  --bus-config PATH          the bus's accounts and authorization (unibus cluster bus-config)",
    "  --route-tls-dir DIR        route mTLS: DIR/route.crt, DIR/route.key, DIR/ca.crt",
    "  --recovery-secret-file P   cold start without a gateway (0600 file, or - for stdin)",
    "  -h, --help                 show this help",
    "",
    connectionHelp,
  ].join("\n");
  return parsedCommand({
    name: "start",
    command: COMMAND,
    summary: "join the cluster and start this node's nats-server with its own store key (node side)",
    help,
    options,
    maxPositionals: 0,
    async run({ flags }, io) {
      const home = deps.homeOf(flags, io, COMMAND);
      const listen = requiredFlag(flags, "listen");
      if (!HOST_PORT.test(listen)) throw new UsageError("--listen is HOST:PORT", COMMAND);
      const routes = requiredFlag(flags, "routes")
        .split(",")
        .map((r) => r.trim())
        .filter((r) => r !== "");
      if (routes.length === 0 || routes.some((r) => !/^(nats-route|tls):\/\/[^\s/]+:\d{1,5}$/.test(r))) throw new UsageError("--routes is a comma-separated list of nats-route://host:port", COMMAND);
      const port = portOf(flags, "port");
      if (port === undefined) throw new UsageError("missing --port", COMMAND);
      const monitorPort = portOf(flags, "monitor-port");
      const busConfig = await readBusConfig(resolve(io.cwd, requiredFlag(flags, "bus-config")));
      const tlsDir = stringFlag(flags, "route-tls-dir");
      const routeTls = tlsDir === undefined ? undefined : { certFile: resolve(io.cwd, tlsDir, "route.crt"), keyFile: resolve(io.cwd, tlsDir, "route.key"), caFile: resolve(io.cwd, tlsDir, "ca.crt") };
      const info = await deps.wrapHome(readNodeClusterInfo(home));
      const recoveryFile = stringFlag(flags, "recovery-secret-file");
      let bin: string;
      try {
        bin = (await findNatsServer({ log: (l) => io.err(l) })).bin;
      } catch (err) {
        if (err instanceof NatsServerNotFoundError) throw new CliError(err.message, { cause: err });
        throw err;
      }

      const unlock = (): Promise<UnlockKeys> => nodeUnlockKeys(deps, { io, flags, home, nodeId: info.nodeId, recoveryFile, command: COMMAND });

      let node: ClusterNode;
      try {
        node = await startClusterNode({
          dir: home,
          serverName: info.nodeId,
          clusterName: info.clusterName,
          listen,
          routes,
          port,
          ...(stringFlag(flags, "host") === undefined ? {} : { host: stringFlag(flags, "host") }),
          ...(monitorPort === undefined ? {} : { monitorPort }),
          ...(routeTls === undefined ? {} : { routeTls }),
          config: busConfig,
          bin,
          unlock,
        });
      } catch (err) {
        if (err instanceof CliError) throw err;
        throw requestError(err, "replica-gateway");
      }
      io.out(`node ${info.nodeId} started: client port ${port}, routes on ${listen}, store opened with its own key (pid ${node.server.pid})`);
      const why = await untilStopped(node);
      if (why === "server-exited") {
        io.err(`nats-server of node ${info.nodeId} exited`);
        return ExitCode.failure;
      }
      await node.server.stop();
      io.out(`node ${info.nodeId} stopped`);
      return ExitCode.ok;
    },
  });
}

