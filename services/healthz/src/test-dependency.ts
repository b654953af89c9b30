import { Access, defineService, endpoint } from "@unibus/kit";

/**
 * For tests: a stand-in for a service healthz requires. Any kit service
 * answers PING the same way, so this one endpoint is all it needs.
 */
export const testDependency = defineService({
  name: "hz-dep",
  version: "2.0.0",
  description: "a service healthz requires",
  endpoints: {
    probe: endpoint({
      subject: "unibus.v1.hzdep.probe",
      request: "healthz.status.request",
      reply: "healthz.status.reply",
      mutates: false,
      access: Access.Public,
      async handler() {
        return { status: "ok" as const, service: "hz-dep", version: "2.0.0" };
      },
    }),
  },
});
