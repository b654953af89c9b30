import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { accountJetStreamLimitsFromEnv } from "@unibus/kit";
import type { AccountJetStreamLimits } from "@unibus/kit";
import { parseCommandArgs, stringFlag } from "../args.js";
import type { Command } from "../command.js";
import { CliError, ExitCode, UsageError } from "../errors.js";
import { resolveHome, writePrivateFile } from "../home.js";
import type { CliIo } from "../io.js";
import { promoteHome } from "../cluster/convert.js";
import type { RouteTls } from "../cluster/node.js";
import { freePort } from "../up/ports.js";
import { provisionHome } from "../up/provision.js";
import { homeAuthorization } from "../up/server-config.js";
import { onStoppedBus } from "../store/stopped-bus.js";
import { ALL_SERVICES } from "../up/services.js";

const promoteHelp = `Usage: unibus cluster promote --cluster NAME --server-name NAME --listen HOST:PORT
                              --routes URL,URL [--replicas 3] [--dry-run]
                              [--route-cert FILE --route-key FILE --route-ca FILE]

Makes this state dir's bus the first node of a cluster and raises every KV
bucket, stream and object store to R3 in place.

A single-node store cannot simply be restarted with a cluster block:
nats-server 2.15 deletes its streams as orphans. So, on a single-node home,
the store is moved to data.standalone (kept: the way back), this node starts
on a fresh store with the cluster block, every stream is copied in through
snapshot/restore and checked message by message, then raised from R1 to R3
with a stream update. Success is reported only once every follower of every
stream is current with lag 0. The home then records the cluster in
cluster.json, and \`unibus up\` starts it as a cluster node whose services
create new buckets with R3. On a home that is already a cluster node, only
the promotion runs.

The other nodes must be up first (started with their per-node keys), with
routes to --listen. The bus must be stopped: the command takes the state dir's lock.

Options:
  --cluster NAME         cluster name (the same on every node)
  --server-name NAME     this node's server name
  --listen HOST:PORT     this node's route listen address
  --routes URL,URL       route URLs of the other nodes (nats-route://host:port)
  --replicas N           target replicas (default 3)
  --dry-run              list what would change; change nothing
  --route-cert/--route-key/--route-ca FILE
                         mutual TLS on the route port (all three, or none)
  -h, --help             show this help`;

function required(flags: Record<string, string | boolean | undefined>, name: string): string {
  const v = stringFlag(flags, name);
  if (v === undefined || v.trim() === "") throw new UsageError(`--${name} is required`, "cluster promote");
  return v.trim();
}

function routeTlsOf(flags: Record<string, string | boolean | undefined>): RouteTls | undefined {
  const cert = stringFlag(flags, "route-cert");
  const key = stringFlag(flags, "route-key");
  const ca = stringFlag(flags, "route-ca");
  if (cert === undefined && key === undefined && ca === undefined) return undefined;
  if (cert === undefined || key === undefined || ca === undefined) throw new UsageError("--route-cert, --route-key and --route-ca go together", "cluster promote");
  return { certFile: cert, keyFile: key, caFile: ca };
}

/** `unibus cluster promote`: a stopped single-node home becomes the first node of an R3 cluster. */
export const clusterPromoteCommand: Command = {
  name: "promote",
  summary: "make this bus the first cluster node and raise every stream to R3",
  help: promoteHelp,
  async run(args, io) {
    const { flags } = parseCommandArgs(
      args,
      {
        cluster: { type: "string" },
        "server-name": { type: "string" },
        listen: { type: "string" },
        routes: { type: "string" },
        replicas: { type: "string" },
        "dry-run": { type: "boolean" },
        "route-cert": { type: "string" },
        "route-key": { type: "string" },
        "route-ca": { type: "string" },
      },
      { command: "cluster promote", maxPositionals: 0 },
    );
    if (flags.help) {
      io.out(promoteHelp);
      return ExitCode.ok;
    }
    const routes = required(flags, "routes").split(",").map((r) => r.trim()).filter((r) => r !== "");
    if (routes.length < 2 || routes.some((r) => !/^(nats-route|nats|tls):\/\/[^\s/]+:\d+$/.test(r))) {
      throw new UsageError("--routes needs the route URLs of at least two other nodes, e.g. nats-route://10.0.0.2:6222,nats-route://10.0.0.3:6222", "cluster promote");
    }
    const listen = required(flags, "listen");
    if (!/^[^\s/]+:\d+$/.test(listen)) throw new UsageError(`--listen must be HOST:PORT, got ${JSON.stringify(listen)}`, "cluster promote");
    const replicasFlag = stringFlag(flags, "replicas") ?? "3";
    if (!/^[1-5]$/.test(replicasFlag)) throw new UsageError(`--replicas must be 1 to 5, got ${JSON.stringify(replicasFlag)}`, "cluster promote");
    const routeTls = routeTlsOf(flags);
    await runPromote(io, {
      clusterName: required(flags, "cluster"),
      serverName: required(flags, "server-name"),
      listen,
      routes,
      replicas: Number(replicasFlag),
      dryRun: flags["dry-run"] === true,
      ...(routeTls === undefined ? {} : { routeTls }),
    });
    return ExitCode.ok;
  },
};

async function runPromote(
  io: CliIo,
  opts: { clusterName: string; serverName: string; listen: string; routes: string[]; replicas: number; dryRun: boolean; routeTls?: RouteTls },
): Promise<void> {
  await onStoppedBus(io, "cluster promote", async ({ home, bin, say }) => {
    // Reuses every key of the home; provisioning never replaces an existing one.
    const state = await provisionHome(home, ALL_SERVICES);
    const result = await promoteHome({
      home,
      bin,
      say,
      jetstreamKey: state.jetstreamKey,
      authorization: homeAuthorization(state, jetStreamLimits(io)),
      // While promoting, clients stay away: the client port is a private loopback one.
      port: await freePort("127.0.0.1"),
      ...opts,
    });
    say(opts.dryRun ? `dry run: ${result.plan.filter((s) => s.to > s.from).length} of ${result.plan.length} streams would be raised; nothing changed` : "done");
  });
}

/** The app account's JetStream limits from the environment, as `unibus up` sets them. */
function jetStreamLimits(io: CliIo): AccountJetStreamLimits {
  try {
    return accountJetStreamLimitsFromEnv(io.env);
  } catch (err) {
    throw new CliError((err as Error).message, { cause: err });
  }
}

const busConfigHelp = `Usage: unibus cluster bus-config [--out PATH]

Prints (or writes to PATH, 0600) the bus's accounts and authorization as
JSON: the callout issuer and xkey public keys, the service users' public
nkeys and their permissions. Every node of the cluster runs with the same
authorization; a new node gets it with \`unibus node start --bus-config PATH\`.
It holds public keys only, and nothing a node could use to log in.

Options:
  --out PATH             write the JSON there instead of standard output
  -h, --help             show this help`;

/** `unibus cluster bus-config`: the authorization every node of this bus runs with, for `node start`. */
export const clusterBusConfigCommand: Command = {
  name: "bus-config",
  summary: "print the bus's accounts and authorization for new nodes (public keys only)",
  help: busConfigHelp,
  async run(args, io) {
    const { flags } = parseCommandArgs(args, { out: { type: "string" } }, { command: "cluster bus-config", maxPositionals: 0 });
    if (flags.help) {
      io.out(busConfigHelp);
      return ExitCode.ok;
    }
    const home = resolveHome(io.env, io.cwd);
    if (!existsSync(home.jetstreamKeyFile)) throw new CliError(`${home.root} is not a provisioned bus home (no ${home.jetstreamKeyFile}); run it on the first node, or set UNIBUS_HOME`);
    const state = await provisionHome(home, ALL_SERVICES);
    const authorization = homeAuthorization(state, jetStreamLimits(io));
    const text = `${JSON.stringify(authorization, null, 2)}\n`;
    const out = stringFlag(flags, "out");
    if (out === undefined) io.out(text.trimEnd());
    else {
      await writePrivateFile(resolve(io.cwd, out), text);
      io.out(`bus config written to ${resolve(io.cwd, out)}`);
    }
    return ExitCode.ok;
  },
};
