import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { Subjects } from "@unibus/contracts";
import type { ReplicaApproveReply, ReplicaDecommissionReply, ReplicaNodesReply, ReplicaTicketReply } from "@unibus/contracts";
import { parseReplicaPsk, ReplicaHandshakeError } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import {
  commitNode,
  initNodeHome,
  joinNode,
  loadNodeIdentity,
  NODE_HOME_ENV,
  NodeHomeError,
  NodeHomeFile,
  readNodeClusterInfo,
  registerNode,
  replicaHandshake,
  ReplicaHandshakeRejectedError,
  signedRequest,
  writeNodeClusterInfo,
  writeWrappedCuk,
} from "@unibus/sdk";
import { stringFlag } from "../args.js";
import type { ParsedFlags } from "../args.js";
import { printJson } from "../client-command.js";
import { commandGroup } from "../command.js";
import { CliError, ExitCode, UsageError } from "../errors.js";
import type { CliIo } from "../io.js";
import { formatTable } from "../table.js";
import { busCommand, readSecretInput } from "./cluster.js";
import { connectToBus } from "../connection.js";
import { nodeAdoptCommand } from "./node-adopt.js";
import { nodeStartCommand } from "./node-start.js";
import type { NodeStartDeps } from "./node-start.js";

const TIMEOUT_MS = 10_000;
const NODE_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;

function nodeIdArg(raw: string | undefined, command: string): string {
  if (raw === undefined || !NODE_ID.test(raw)) throw new UsageError("a node id is lowercase letters, digits and dashes (at most 63)", command);
  return raw;
}

const adminCall = <T>(nc: NatsConnection, identity: Identity, subject: string, body: unknown): Promise<T> => signedRequest<T>(nc, identity.signingKey, subject, body, TIMEOUT_MS);

const nodeTicket = busCommand({
  name: "ticket",
  command: "node ticket",
  summary: "issue a one-time registration ticket for a node id (admin only)",
  usage: "Usage: unibus node ticket <node-id> [--json]\n\nPrints a one-time ticket (valid 24 h) once; only its hash is stored. Hand it\nto the node's operator over a private channel.",
  positionals: ["node-id"],
  async run({ nc, identity, positionals, json, io }) {
    const reply = await adminCall<ReplicaTicketReply>(nc, identity, Subjects.replicaGateway.ticket, { nodeId: nodeIdArg(positionals[0], "node ticket") });
    if (json) return printJson(io, reply);
    io.out(`ticket for ${reply.nodeId} (valid until ${reply.expiresAt}, usable once):`);
    io.out(`  ${reply.ticket}`);
    return ExitCode.ok;
  },
});

const nodeApprove = busCommand({
  name: "approve",
  command: "node approve",
  summary: "approve a registered node: NEW → STANDBY (admin only)",
  usage: "Usage: unibus node approve <node-id> [--json]",
  positionals: ["node-id"],
  async run({ nc, identity, positionals, json, io }) {
    const reply = await adminCall<ReplicaApproveReply>(nc, identity, Subjects.replicaGateway.approve, { nodeId: nodeIdArg(positionals[0], "node approve") });
    if (json) return printJson(io, reply);
    io.out(`${reply.nodeId} is ${reply.state} (history seq ${reply.seq})`);
    return ExitCode.ok;
  },
});

const nodeDecommission = busCommand({
  name: "decommission",
  command: "node decommission",
  summary: "decommission a node forever and destroy its wrapped unlock key (admin only)",
  usage: "Usage: unibus node decommission <node-id> [--json]\n\nThe node can never join again, nor register its join key again.",
  positionals: ["node-id"],
  async run({ nc, identity, positionals, json, io }) {
    const reply = await adminCall<ReplicaDecommissionReply>(nc, identity, Subjects.replicaGateway.decommission, { nodeId: nodeIdArg(positionals[0], "node decommission") });
    if (json) return printJson(io, reply);
    io.out(`${reply.nodeId} is ${reply.state} (history seq ${reply.seq})`);
    return ExitCode.ok;
  },
});

const nodeList = busCommand({
  name: "list",
  command: "node list",
  summary: "list the cluster's nodes and their states (admin only)",
  usage: "Usage: unibus node list [--json]",
  positionals: [],
  async run({ nc, identity, json, io }) {
    const reply = await adminCall<ReplicaNodesReply>(nc, identity, Subjects.replicaGateway.nodes, {});
    if (json) return printJson(io, reply);
    io.out(formatTable([["NODE", "STATE", "JOIN KEY", "SEQ"], ...reply.nodes.map((n) => [n.nodeId, n.state, n.joinKey, String(n.seq)])]));
    return ExitCode.ok;
  },
});

function homeOf(flags: ParsedFlags, io: CliIo, command: string): string {
  const home = stringFlag(flags, "home") ?? io.env[NODE_HOME_ENV];
  if (home === undefined || home === "") throw new UsageError(`pass --home PATH or set ${NODE_HOME_ENV}`, command);
  return resolve(io.cwd, home);
}

/** The PSK from `UNIBUS_REPLICA_PSK_FILE` (0600) or `UNIBUS_REPLICA_PSK`; never from argv. */
async function pskOf(io: CliIo): Promise<Uint8Array> {
  const file = io.env["UNIBUS_REPLICA_PSK_FILE"];
  const value = io.env["UNIBUS_REPLICA_PSK"];
  const text = file !== undefined && file !== "" ? await readSecretInput(io, file, "PSK", "node") : value;
  if (text === undefined || text === "") throw new CliError("no cluster PSK: set UNIBUS_REPLICA_PSK_FILE (a 0600 file) or UNIBUS_REPLICA_PSK");
  try {
    return parseReplicaPsk(text);
  } catch (err) {
    throw new CliError(`cluster PSK: ${err instanceof ReplicaHandshakeError ? err.message : "invalid"}`);
  }
}

const homeOptions = { home: { type: "string" }, cluster: { type: "string" } } as const;
const homeHelp = [`  --home PATH           the node home (default: $${NODE_HOME_ENV})`, "  --cluster NAME        cluster name (default: $UNIBUS_CLUSTER_NAME, or the home's cluster.json)"];

async function handshakeSession(nc: NatsConnection, io: CliIo, identity: Identity, clusterName: string, nodeId: string): Promise<string> {
  try {
    const hs = await replicaHandshake(nc, { clusterName, replicaId: nodeId, psk: await pskOf(io), identity: identity.signingKey });
    return hs.session.sessionId;
  } catch (err) {
    if (err instanceof ReplicaHandshakeRejectedError) throw new CliError(`the gateway refused the handshake: ${err.message}`);
    throw err;
  }
}

function wrapHome<T>(p: Promise<T>): Promise<T> {
  return p.catch((err: unknown) => {
    if (err instanceof NodeHomeError) throw new CliError(err.message);
    throw err;
  });
}

const nodeRegister = busCommand({
  name: "register",
  command: "node register",
  summary: "register this node with a ticket: NEW (node side)",
  usage:
    "Usage: unibus node register <node-id> [--home PATH] [--cluster NAME] [--ticket-file PATH]\n\nCreates the node home if needed (node.key: the join key; nuk: the node unlock\nkey; both 0600), runs the PSK handshake and registers the join key with the\nticket, read from PATH (0600) or standard input. Needs the cluster PSK in\nUNIBUS_REPLICA_PSK_FILE or UNIBUS_REPLICA_PSK.",
  optionsHelp: [...homeHelp, "  --ticket-file PATH    file holding the ticket (default: standard input)"],
  options: { ...homeOptions, "ticket-file": { type: "string" } },
  positionals: ["node-id"],
  async identityPath(flags, io) {
    const home = homeOf(flags, io, "node register");
    if (!existsSync(join(home, NodeHomeFile.key))) await wrapHome(initNodeHome(home));
    return join(home, NodeHomeFile.key);
  },
  async run({ nc, identity, flags, positionals, json, io }) {
    const nodeId = nodeIdArg(positionals[0], "node register");
    const home = homeOf(flags, io, "node register");
    const clusterName = stringFlag(flags, "cluster") ?? io.env["UNIBUS_CLUSTER_NAME"];
    if (clusterName === undefined || clusterName === "") throw new UsageError("pass --cluster NAME or set UNIBUS_CLUSTER_NAME", "node register");
    const ticket = await readSecretInput(io, stringFlag(flags, "ticket-file"), "ticket", "node register");
    const sessionId = await handshakeSession(nc, io, identity, clusterName, nodeId);
    const reply = await registerNode(nc, { identity, nodeId, sessionId, clusterName, ticket });
    await wrapHome(writeNodeClusterInfo(home, { nodeId, ...reply.cluster }));
    if (json) return printJson(io, { ...reply, joinKey: identity.principal });
    io.out(`${nodeId} registered as ${reply.state} with join key ${identity.principal}; ask an admin to run: unibus node approve ${nodeId}`);
    return ExitCode.ok;
  },
});

/** Node-side steps after register: the home names the node and its cluster. */
function nodeStep(name: "commit" | "join", summary: string, usage: string, act: (call: { nc: NatsConnection; identity: Identity; home: string; nodeId: string; sessionId: string; clusterAgreementKey: string }) => Promise<string>) {
  const command = `node ${name}`;
  return busCommand({
    name,
    command,
    summary,
    usage,
    optionsHelp: homeHelp,
    options: homeOptions,
    positionals: [],
    async identityPath(flags, io) {
      return join(homeOf(flags, io, command), NodeHomeFile.key);
    },
    async run({ nc, identity, flags, json, io }) {
      const home = homeOf(flags, io, command);
      const info = await wrapHome(readNodeClusterInfo(home));
      const clusterName = stringFlag(flags, "cluster") ?? info.clusterName;
      const sessionId = await handshakeSession(nc, io, identity, clusterName, info.nodeId);
      const line = await act({ nc, identity, home, nodeId: info.nodeId, sessionId, clusterAgreementKey: info.agreementKey });
      if (json) return printJson(io, { nodeId: info.nodeId, result: line });
      io.out(line);
      return ExitCode.ok;
    },
  });
}

const nodeCommit = nodeStep(
  "commit",
  "commit this node's cluster unlock key share: STANDBY → UP (node side)",
  "Usage: unibus node commit [--home PATH]\n\nGenerates the node's cluster unlock key share, sends it sealed to the cluster,\nand keeps the gateway's wrapped copy in the home (cuk.wrapped, 0600) for a\ncold start. Only an approved node may commit.",
  async ({ nc, identity, home, nodeId, sessionId, clusterAgreementKey }) => {
    const result = await commitNode(nc, { identity, nodeId, sessionId, clusterAgreementKey });
    result.cuk.fill(0);
    await wrapHome(writeWrappedCuk(home, result.wrappedCuk));
    return `${nodeId} is ${result.reply.state} (history seq ${result.reply.seq}); wrapped unlock key kept in ${join(home, NodeHomeFile.cukWrapped)}`;
  },
);

const nodeJoin = nodeStep(
  "join",
  "prove the join key and receive the cluster unlock key (node side)",
  "Usage: unibus node join [--home PATH]\n\nWhat every boot does: the handshake, then the node's cluster unlock key,\nsealed to the node. Prints only whether it worked (the key is never shown).",
  async ({ nc, identity, nodeId, sessionId }) => {
    const cuk = await joinNode(nc, { identity, nodeId, sessionId });
    const ok = cuk.byteLength === 32;
    cuk.fill(0);
    if (!ok) throw new CliError("the gateway returned a malformed unlock key");
    return `${nodeId} joined: cluster unlock key received`;
  },
);

/**
 * `unibus node start`: the join of every boot (handshake, then the CUK
 * sealed to the node) through a running node's client port, as the node's
 * own identity, whose only grant is the handshake subjects.
 */
const nodeDeps: NodeStartDeps = {
  homeOf,
  wrapHome,
  async joinForKey({ io, home, flags, server, tlsCa }) {
    const info = await wrapHome(readNodeClusterInfo(home));
    const identityPath = join(home, NodeHomeFile.key);
    const identity = await wrapHome(loadNodeIdentity(home));
    const nc = await connectToBus({ server, identityPath, source: "node home", ...(tlsCa === undefined ? {} : { tlsCa }) }, "unibus node start");
    try {
      const clusterName = stringFlag(flags, "cluster") ?? info.clusterName;
      const sessionId = await handshakeSession(nc, io, identity, clusterName, info.nodeId);
      const cuk = await joinNode(nc, { identity, nodeId: info.nodeId, sessionId });
      if (cuk.byteLength !== 32) throw new CliError("the gateway returned a malformed unlock key");
      return cuk;
    } finally {
      await nc.close().catch(() => undefined);
    }
  },
};
const nodeStart = nodeStartCommand(nodeDeps);
/** `unibus node adopt`: the promoted first node's store rebuilt under its derived key, with the same join. */
const nodeAdopt = nodeAdoptCommand(nodeDeps);

/** `unibus node …`. */
export const nodeCommandGroup = commandGroup({
  name: "node",
  summary: "cluster nodes: ticket, register, approve, commit, join, start, adopt, decommission",
  intro: "Usage: unibus node <command> [options]\n\nA node joins the cluster through ticket → register → approve → commit → join;\njoin runs on every boot; decommission is forever.",
  subcommands: [nodeTicket, nodeRegister, nodeApprove, nodeCommit, nodeJoin, nodeStart, nodeAdopt, nodeDecommission, nodeList],
});
