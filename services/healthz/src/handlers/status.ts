import { ServiceName } from "@unibus/contracts";
import { handles } from "@unibus/kit";
import packageJson from "../../package.json" with { type: "json" };

/** `status`: the bus answers, and with which version. */
export const statusHandler = handles("healthz", "status", {
  async handler() {
    return { status: "ok", service: ServiceName.healthz, version: packageJson.version };
  },
});
