/**
 * Every unibus service in ONE Node process: `unibus up`'s lean embedded
 * default. Each service still has its own NATS connection, identity, micro
 * registration and environment, so on the bus they are the same independent
 * services as in their own processes (or containers), and they talk to each
 * other only over NATS; what they share is one runtime and one copy of the
 * code, instead of six.
 *
 * This script lives under services/ because it imports every service: a lib
 * never imports a service (the supervisor in @unibus/cli only names this file).
 *
 * `UNIBUS_EMBEDDED_SERVICES` is a JSON object: service name → the variables
 * that service gets on top of this process's environment (paths and
 * principals, never secrets). Only the services named there run. A service
 * that fails to start, or whose connection closes, ends the process (the
 * supervisor restarts it, every service with it), so none is ever missing
 * silently.
 */
import { ServiceName } from "@unibus/contracts";
import { runServiceProcess } from "@unibus/kit";
import type { ServiceEntry, ServiceProcessMember } from "@unibus/kit";
import { authCalloutEntry } from "@unibus/auth-callout/entry";
import { blobsEntry } from "@unibus/blobs/entry";
import { healthzEntry } from "@unibus/healthz/entry";
import { keysEntry } from "@unibus/keys/entry";
import { membershipEntry } from "@unibus/membership/entry";
import { replicaGatewayEntry } from "@unibus/replica-gateway/entry";

/** Read by this script only; `unibus up` sets it. */
export const EMBEDDED_SERVICES_ENV = "UNIBUS_EMBEDDED_SERVICES";

const entries: Readonly<Record<ServiceName, ServiceEntry>> = {
  [ServiceName.authCallout]: authCalloutEntry,
  [ServiceName.membership]: membershipEntry,
  [ServiceName.keys]: keysEntry,
  [ServiceName.blobs]: blobsEntry,
  [ServiceName.replicaGateway]: replicaGatewayEntry,
  [ServiceName.healthz]: healthzEntry,
};

function members(env: NodeJS.ProcessEnv): ServiceProcessMember[] {
  const { [EMBEDDED_SERVICES_ENV]: raw, ...base } = env;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw ?? "");
  } catch {
    parsed = undefined;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error(`${EMBEDDED_SERVICES_ENV} must be a JSON object of service name -> environment`);
  return Object.entries(parsed as Record<string, unknown>).map(([name, vars]) => {
    const entry = (entries as Record<string, ServiceEntry | undefined>)[name];
    if (entry === undefined) throw new Error(`${EMBEDDED_SERVICES_ENV}: unknown service ${name}`);
    if (typeof vars !== "object" || vars === null || Object.values(vars).some((v) => typeof v !== "string")) {
      throw new Error(`${EMBEDDED_SERVICES_ENV}: the environment of ${name} must map names to strings`);
    }
    return { entry, env: { ...base, ...(vars as Record<string, string>) } };
  });
}

try {
  await runServiceProcess(members(process.env));
} catch (err) {
  process.stderr.write(`unibus services: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(2);
}
