import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ServiceName } from "@unibus/contracts";

// One list of service names for ACLs, services and the supervisor (contracts
// orders it auth-callout first: it decides who may connect).
export { ServiceName } from "@unibus/contracts";

/** Every service, in start order. */
export const ALL_SERVICES: readonly ServiceName[] = Object.values(ServiceName);

/** The repository root (this file is libs/cli/src/up/services.ts). */
export const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));

/** Where a service's entry point lives. */
export function serviceEntryPoint(name: ServiceName, root: string = REPO_ROOT): string {
  return join(root, "services", name, "src", "main.ts");
}

/**
 * The script that runs several services in one process (`unibus up`'s
 * default). Named by path, never imported: a lib does not import services.
 */
export function embeddedEntryPoint(root: string = REPO_ROOT): string {
  return join(root, "services", "embedded-main.ts");
}

/** Read by services/embedded-main.ts: service name → that service's extra environment, as JSON. */
export const EMBEDDED_SERVICES_ENV = "UNIBUS_EMBEDDED_SERVICES";

/** How `unibus up` runs the services (`UNIBUS_SERVICE_PROCESSES`). */
export const ServiceProcesses = {
  /** All in one Node process, bundled to plain JavaScript (the default: lean on a laptop). */
  One: "one",
  /** One Node process per service, through the TypeScript loader (as before; each restarts alone). */
  Each: "each",
} as const;
/** One of the {@link ServiceProcesses} values. */
export type ServiceProcesses = (typeof ServiceProcesses)[keyof typeof ServiceProcesses];

/** A service entry point found on disk, or the reason it cannot run yet. */
export type ServiceAvailability =
  | { readonly name: ServiceName; readonly available: true; readonly entryPoint: string }
  | { readonly name: ServiceName; readonly available: false; readonly entryPoint: string };

/** Which services have an entry point in this checkout; others are reported, not faked. */
export function serviceAvailability(root: string = REPO_ROOT): ServiceAvailability[] {
  return ALL_SERVICES.map((name) => {
    const entryPoint = serviceEntryPoint(name, root);
    return existsSync(entryPoint) ? { name, available: true, entryPoint } : { name, available: false, entryPoint };
  });
}
