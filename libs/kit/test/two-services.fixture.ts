// A process running two kit services through runServiceProcess, each with its
// own environment (service-process.test.ts spawns it). FIXTURE_FAIL=second
// gives the second one an environment it cannot start with.
import { Access, defineService, kitServiceEntry, runServiceProcess, startService } from "@unibus/kit";
import type { ServiceEntry } from "@unibus/kit";

function entry(name: string): ServiceEntry {
  const definition = defineService({
    name,
    version: "1.0.0",
    description: `fixture ${name}`,
    endpoints: {
      status: {
        subject: `fixture.${name}.status`,
        request: "healthz.status.request",
        reply: "healthz.status.reply",
        mutates: false,
        access: Access.Public,
        async handler() {
          return { status: "ok", service: name, version: "1.0.0" };
        },
      },
    },
  });
  return kitServiceEntry(name, () => (nc, deps) => startService(nc, definition, deps));
}

const base = process.env;
await runServiceProcess([
  { entry: entry("first"), env: { ...base } },
  { entry: entry("second"), env: { ...base, ...(base["FIXTURE_FAIL"] === "second" ? { UNIBUS_JS_REPLICAS: "three" } : {}) } },
]);
