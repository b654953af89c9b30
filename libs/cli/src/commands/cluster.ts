import { lstat, readFile } from "node:fs/promises";
import { resolve } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { Subjects } from "@unibus/contracts";
import type { ReplicaHistoryReply } from "@unibus/contracts";
import { ClusterSecretError } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { fetchClusterHistory, initCluster, recoverCluster, signedRequest } from "@unibus/sdk";
import type { ClusterHistoryEntry } from "@unibus/sdk";
import { parseCommandArgs, stringFlag } from "../args.js";
import type { OptionSpec, ParsedFlags } from "../args.js";
import { principalArg, printJson } from "../client-command.js";
import { commandGroup } from "../command.js";
import type { Command } from "../command.js";
import { connectionHelp, connectionOptions, connectToBus, requestError, resolveConnectionSettings } from "../connection.js";
import { CliError, ExitCode, UsageError } from "../errors.js";
import { loadIdentityForCli } from "../identity-file.js";
import type { CliIo } from "../io.js";
import { formatTable } from "../table.js";
import { clusterBusConfigCommand, clusterPromoteCommand } from "./cluster-promote.js";

/** What a {@link busCommand} body receives. */
export interface BusCommandCall {
  readonly nc: NatsConnection;
  /** The caller's identity (the admin's, or the node's for node-side commands). */
  readonly identity: Identity;
  readonly flags: ParsedFlags;
  readonly positionals: readonly string[];
  readonly json: boolean;
  readonly io: CliIo;
}

/** A command that connects as an identity and signs requests with it (replica gateway commands). */
export function busCommand(spec: {
  name: string;
  command: string;
  summary: string;
  usage: string;
  optionsHelp?: readonly string[];
  options?: OptionSpec;
  positionals: readonly string[];
  /** Overrides the identity file (a node's home key). */
  identityPath?(flags: ParsedFlags, io: CliIo): Promise<string | undefined>;
  run(call: BusCommandCall): Promise<number>;
}): Command {
  const help = [spec.usage, "", "Options:", ...(spec.optionsHelp ?? []), "  --json                print JSON", "  -h, --help            show this help", "", connectionHelp].join("\n");
  return {
    name: spec.name,
    summary: spec.summary,
    help,
    async run(args, io) {
      const { flags, positionals } = parseCommandArgs(args, { ...connectionOptions, json: { type: "boolean" }, ...spec.options }, { command: spec.command, maxPositionals: spec.positionals.length });
      if (flags.help) {
        io.out(help);
        return ExitCode.ok;
      }
      const missing = spec.positionals.slice(positionals.length);
      if (missing.length > 0) throw new UsageError(`missing ${missing.map((m) => `<${m}>`).join(" ")}`, spec.command);
      const base = await resolveConnectionSettings(flags, io);
      const override = await spec.identityPath?.(flags, io);
      const settings = override === undefined ? base : { ...base, identityPath: override };
      if (settings.identityPath === undefined) throw new CliError("no identity to connect as: pass --identity PATH or set UNIBUS_IDENTITY");
      const identity = await loadIdentityForCli(settings.identityPath);
      const nc = await connectToBus(settings, `unibus-cli ${spec.command}`);
      try {
        return await spec.run({ nc, identity, flags, positionals, json: flags.json === true, io });
      } catch (err) {
        if (err instanceof CliError) throw err;
        if (err instanceof ClusterSecretError) throw new CliError(err.message);
        throw requestError(err, "replica-gateway");
      } finally {
        await nc.close().catch(() => undefined);
      }
    },
  };
}

/**
 * Reads a secret from `--*-file PATH` (a regular file others cannot read)
 * or the first line of standard input; never from argv, where any local
 * user's `ps` would show it.
 */
export async function readSecretInput(io: CliIo, path: string | undefined, what: string, command: string): Promise<string> {
  if (path !== undefined) {
    const abs = resolve(io.cwd, path);
    let st;
    try {
      st = await lstat(abs);
    } catch {
      throw new CliError(`cannot read ${abs}`);
    }
    if (!st.isFile()) throw new CliError(`${abs} must be a regular file`);
    if ((st.mode & 0o077) !== 0) throw new CliError(`${abs} has mode ${(st.mode & 0o777).toString(8)}; a ${what} file must be 0600`);
    return (await readFile(abs, "utf8")).trim();
  }
  if (io.lines === undefined) throw new UsageError(`give the ${what} on standard input or with a file option`, command);
  for await (const line of io.lines()) {
    if (line.trim() !== "") return line.trim();
  }
  throw new UsageError(`no ${what} on standard input`, command);
}

const clusterInit = busCommand({
  name: "init",
  command: "cluster init",
  summary: "create the cluster secret and the history's genesis (admin only)",
  usage:
    "Usage: unibus cluster init --name CLUSTER [--json]\n\nGenerates the cluster secret seed, seals it to every replica-gateway replica\nthat answers discovery, and writes the genesis of the cluster history.\nPrints the RECOVERY SECRET once: write it down and keep it offline; it is\nthe only way back after every gateway replica restarted at once.",
  optionsHelp: ["  --name CLUSTER        the cluster name the gateways are configured with (required)"],
  options: { name: { type: "string" } },
  positionals: [],
  async run({ nc, identity, flags, json, io }) {
    const clusterName = stringFlag(flags, "name");
    if (clusterName === undefined || clusterName === "") throw new UsageError("--name is required", "cluster init");
    const result = await initCluster(nc, identity.signingKey, { clusterName });
    if (json) return printJson(io, { ...result.reply, gateways: result.gateways, recoverySecret: result.recoverySecret });
    io.out(`cluster ${clusterName} initialised (id ${result.reply.clusterId}); gateways allowed to hold the seed:`);
    for (const g of result.gateways) io.out(`  ${g}`);
    io.out("");
    io.out("RECOVERY SECRET (shown once; store it offline, never in a file on a cluster node):");
    io.out(`  ${result.recoverySecret}`);
    return ExitCode.ok;
  },
});

const clusterRecover = busCommand({
  name: "recover",
  command: "cluster recover",
  summary: "hand the seed back to restarted gateways from the recovery secret (admin only)",
  usage:
    "Usage: unibus cluster recover [--secret-file PATH]\n\nReads the recovery secret from PATH (mode 0600) or standard input, checks\nits checksum, and sends the seed sealed to the gateway replicas. A replica\naccepts it only when it derives the cluster's genesis history key.",
  optionsHelp: ["  --secret-file PATH    file holding the recovery secret (default: standard input)"],
  options: { "secret-file": { type: "string" } },
  positionals: [],
  async run({ nc, identity, flags, json, io }) {
    const secret = await readSecretInput(io, stringFlag(flags, "secret-file"), "recovery secret", "cluster recover");
    const reply = await recoverCluster(nc, identity.signingKey, secret);
    if (json) return printJson(io, reply);
    io.out(`cluster seed accepted at history seq ${reply.seq}; the other replicas take it from their peer`);
    return ExitCode.ok;
  },
});

function describeEntry(e: ClusterHistoryEntry): string {
  try {
    const fx = JSON.parse(e.effect) as Record<string, unknown>;
    const target = fx["nodeId"] ?? fx["principal"] ?? fx["clusterName"];
    return typeof target === "string" ? target : "";
  } catch {
    return "?";
  }
}

function parsePin(raw: string | undefined): { seq: number; hash: string } | undefined {
  if (raw === undefined) return undefined;
  const m = /^(\d+):([A-Za-z0-9_-]{43})$/.exec(raw);
  if (m === null) throw new UsageError("--pin must be SEQ:HASH (as printed by --verify)", "cluster history");
  return { seq: Number(m[1]), hash: m[2] as string };
}

const clusterHistory = busCommand({
  name: "history",
  command: "cluster history",
  summary: "print the cluster history; --verify checks its chain and signatures (admin only)",
  usage:
    "Usage: unibus cluster history [--verify] [--pin SEQ:HASH] [--json]\n\nPrints every node and gateway change. With --verify the chain, each actor's\nsignature and the latest pointer (signed with the cluster's history key) are\nchecked, and a forked, truncated, unsigned or rolled-back history fails\n(exit 1). --pin refuses a history below or different from a head seen before.",
  optionsHelp: ["  --verify              verify the chain (exit 1 on failure)", "  --pin SEQ:HASH        a head verified earlier (implies --verify)"],
  options: { verify: { type: "boolean" }, pin: { type: "string" } },
  positionals: [],
  async run({ nc, identity, flags, json, io }) {
    const pin = parsePin(stringFlag(flags, "pin"));
    if (flags.verify === true || pin !== undefined) {
      let h;
      try {
        h = await fetchClusterHistory(nc, identity.signingKey, pin === undefined ? {} : { pin });
      } catch (err) {
        if (err instanceof Error && err.name === "ClusterHistoryError") throw new CliError(`history does NOT verify: ${err.message}`);
        throw err;
      }
      const head = { seq: h.headSeq, hash: Buffer.from(h.headHash).toString("base64url") };
      if (json) return printJson(io, { verified: true, entries: h.entries, head });
      io.out(formatTable([["SEQ", "TYPE", "TARGET", "SIGNER", "AT"], ...h.entries.map((e) => [String(e.seq), e.type, describeEntry(e), e.signer, e.at])]));
      io.out(`history verified: ${h.length} entries, head ${head.seq}:${head.hash}`);
      return ExitCode.ok;
    }
    const entries: ClusterHistoryEntry[] = [];
    let latest: ReplicaHistoryReply["latest"] | undefined;
    for (;;) {
      const page = await signedRequest<ReplicaHistoryReply>(nc, identity.signingKey, Subjects.replicaGateway.history, { from: entries.length }, 10_000);
      latest ??= page.latest;
      entries.push(...page.entries);
      if (page.entries.length === 0 || entries.length > latest.seq) break;
    }
    if (json) return printJson(io, { entries, latest });
    io.out(formatTable([["SEQ", "TYPE", "TARGET", "SIGNER", "AT"], ...entries.map((e) => [String(e.seq), e.type, describeEntry(e), e.signer, e.at])]));
    io.out(`latest ${latest.seq}:${latest.hash} (not verified; add --verify)`);
    return ExitCode.ok;
  },
});

function gatewayChange(verb: "add" | "remove", summary: string, usage: string): Command {
  const command = `cluster gateway-${verb}`;
  return busCommand({
    name: `gateway-${verb}`,
    command,
    summary,
    usage,
    positionals: ["principal"],
    async run({ nc, identity, positionals, json, io }) {
      const principal = principalArg(positionals[0] ?? "", command);
      const subject = verb === "add" ? Subjects.replicaGateway.gatewayAdd : Subjects.replicaGateway.gatewayRemove;
      const reply = await signedRequest<{ principal: string; seq: number; gateways: string[] }>(nc, identity.signingKey, subject, { principal }, 10_000);
      if (json) return printJson(io, reply);
      io.out(`gateways allowed to hold the seed (history seq ${reply.seq}):`);
      for (const g of reply.gateways) io.out(`  ${g}`);
      return ExitCode.ok;
    },
  });
}

const clusterGatewayAdd = gatewayChange(
  "add",
  "list one more gateway replica principal as allowed to hold the seed (admin only)",
  "Usage: unibus cluster gateway-add <principal> [--json]\n\nA replica with this service identity then gets the seed from a live peer.",
);
const clusterGatewayRemove = gatewayChange(
  "remove",
  "stop listing a gateway principal: peers no longer hand it the seed (admin only)",
  "Usage: unibus cluster gateway-remove <principal> [--json]\n\nThe last listed gateway cannot be removed.",
);

/** `unibus cluster …`. */
export const clusterCommandGroup = commandGroup({
  name: "cluster",
  summary: "cluster secret, history, recovery, and promotion of a single-node home",
  intro: "Usage: unibus cluster <command> [options]\n\nThe cluster's secret seed, its signed history, recovery after every\ngateway replica restarted, and promotion of a stopped single-node home\nto the first node of a three-node cluster.",
  subcommands: [clusterInit, clusterRecover, clusterHistory, clusterGatewayAdd, clusterGatewayRemove, clusterPromoteCommand, clusterBusConfigCommand],
});
