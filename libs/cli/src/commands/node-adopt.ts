import { join } from "node:path";
import { accountJetStreamLimitsFromEnv } from "@unibus/kit";
import { readNodeClusterInfo } from "@unibus/sdk";
import { stringFlag } from "../args.js";
import { adoptFirstNode, adoptableRecord } from "../cluster/adopt.js";
import { parsedCommand } from "../command.js";
import type { Command } from "../command.js";
import { connectionHelp, connectionOptions } from "../connection.js";
import { CliError, ExitCode } from "../errors.js";
import { writePrivateFile } from "../home.js";
import { onStoppedBus } from "../store/stopped-bus.js";
import { freePort } from "../up/ports.js";
import { provisionHome } from "../up/provision.js";
import { homeAuthorization } from "../up/server-config.js";
import { ALL_SERVICES } from "../up/services.js";
import { nodeUnlockKeys } from "./node-start.js";
import type { NodeStartDeps } from "./node-start.js";

const COMMAND = "node adopt";
/** The bus config the adopted node starts with, written into its node home (public keys only). */
const BUS_CONFIG_FILE = "bus.json";

const usage = [
  "Usage: unibus node adopt [--home PATH] [--recovery-secret-file PATH]",
  "",
  "Moves the first node of a promoted home (UNIBUS_HOME, with cluster.json) onto",
  "its own derived store key, like every joined node, and deletes the home's",
  "secrets/jetstream.key. Run it with the bus stopped, after the node home",
  "(--home) was registered under this node's server name, approved and committed.",
  "  1. checks, on this node started the old way, that every stream is R3 with",
  "     every replica current (else refused: this node may hold the only copy);",
  "  2. unlocks the node (the join through UNIBUS_URL, a running peer's client",
  "     port with a gateway behind it, or --recovery-secret-file);",
  "  3. moves data/ to data.retired/ and starts this node on an empty store in",
  "     the node home, under the same server name, with the derived key;",
  "  4. once this node holds a current copy of every stream (the peers copied it",
  "     in), deletes data.retired/ and the key file. If it does not catch up in",
  "     time, data.retired/ goes back to data/ and nothing is lost; a killed run",
  "     resumes when run again.",
  "From then on the node boots with `unibus node start --home PATH` (printed at",
  "the end), and `unibus up` on the home runs its services only, beside it.",
].join("\n");

const options = { ...connectionOptions, home: { type: "string" }, "recovery-secret-file": { type: "string" } } as const;

/** `unibus node adopt`. */
export function nodeAdoptCommand(deps: NodeStartDeps): Command {
  const help = [
    usage,
    "",
    "Options:",
    "  --home PATH                the node home (default: $UNIBUS_NODE_HOME)",
    "  --recovery-secret-file P   unlock with the recovery secret (0600 file, or - for stdin) instead of a join",
    "  -h, --help                 show this help",
    "",
    connectionHelp,
  ].join("\n");
  return parsedCommand({
    name: "adopt",
    command: COMMAND,
    summary: "move the promoted first node onto its own derived store key and delete its key file (bus stopped)",
    help,
    options,
    maxPositionals: 0,
    async run({ flags }, io) {
      const nodeDir = deps.homeOf(flags, io, COMMAND);
      const info = await deps.wrapHome(readNodeClusterInfo(nodeDir));
      const recoveryFile = stringFlag(flags, "recovery-secret-file");
      await onStoppedBus(io, COMMAND, async ({ home, bin, say }) => {
        // Checked before provisioning: on an adopted home it would make a new disk key, on a refused one files it does not need.
        const record = await adoptableRecord({ home, nodeDir, nodeId: info.nodeId, clusterName: info.clusterName });
        const state = await provisionHome(home, ALL_SERVICES);
        let authorization;
        try {
          authorization = homeAuthorization(state, accountJetStreamLimitsFromEnv(io.env));
        } catch (err) {
          throw new CliError((err as Error).message, { cause: err });
        }
        const busConfig = join(nodeDir, BUS_CONFIG_FILE);
        await writePrivateFile(busConfig, `${JSON.stringify(authorization, null, 2)}\n`);
        await adoptFirstNode({
          home,
          nodeDir,
          nodeId: info.nodeId,
          clusterName: info.clusterName,
          bin,
          say,
          jetstreamKey: state.jetstreamKey,
          authorization,
          port: await freePort("127.0.0.1"),
          unlock: () => nodeUnlockKeys(deps, { io, flags, home: nodeDir, nodeId: info.nodeId, recoveryFile, command: COMMAND }),
        });
        say(`done: ${record.server_name} runs on its own derived key; ${home.jetstreamKeyFile} is deleted`);
        say(
          `start it on every boot with: unibus node start --home ${nodeDir} --listen ${record.listen} --routes ${record.routes.join(",")} --port PORT --monitor-port MPORT --bus-config ${busConfig}` +
            (record.route_tls === undefined ? "" : " --route-tls-dir DIR (route.crt, route.key, ca.crt)"),
        );
        say(`then run its services with: UNIBUS_HOME=${home.root} unibus up (services only: it finds that server through ${nodeDir}/server)`);
      });
      return ExitCode.ok;
    },
  });
}
