/**
 * Entry point of the unibus/node-services image for one service:
 *   node --import tsx deploy/docker/service-entry.ts <service>
 * Reads the service's share (UNIBUS_SHARE_DIR, default /run/unibus, written by
 * the init container) into the environment as the same variables `unibus up`
 * passes (paths, never seeds), then runs services/<service>/src/main.ts,
 * which stays the only place that reads them.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { ALL_SERVICES, ServiceName, parseEnvFile } from "@unibus/cli";
import { CalloutEnv, MembershipEnv } from "@unibus/contracts";

const name = process.argv[2] ?? process.env["UNIBUS_SERVICE"] ?? "";
if (!(ALL_SERVICES as readonly string[]).includes(name)) {
  process.stderr.write(`usage: service-entry.ts <${ALL_SERVICES.join("|")}>\n`);
  process.exit(2);
}
const share = process.env["UNIBUS_SHARE_DIR"] ?? "/run/unibus";
const env = process.env;
env["UNIBUS_IDENTITY"] = join(share, "identity.id");
if (name === ServiceName.authCallout) {
  env[CalloutEnv.issuerSeedFile] = join(share, "callout-issuer.seed");
  env[CalloutEnv.xkeySeedFile] = join(share, "callout-xkey.seed");
}
if (name === ServiceName.membership) env[MembershipEnv.sysIdentity] = join(share, "system.id");
// The cluster's gateway share holds the replica PSK (the single-node stack has none): a path, never the key.
if (name === ServiceName.replicaGateway && existsSync(join(share, "replica.psk"))) env["UNIBUS_REPLICA_PSK_FILE"] = join(share, "replica.psk");
const extra = join(share, "env");
if (existsSync(extra)) Object.assign(env, parseEnvFile(readFileSync(extra, "utf8")));
// The JetStream key is for nats-server only (architecture §1.4).
delete env["UNIBUS_JS_KEY"];

const main = join(process.cwd(), "services", name, "src", "main.ts");
// As if run as `node --import tsx services/<name>/src/main.ts` (what `unibus up` runs):
// some mains only start when they are the entry module (argv[1]).
process.argv.splice(1, 2, main);
await import(pathToFileURL(main).href);
