import { Subjects } from "@unibus/contracts";
import type { HealthzPostureReply } from "@unibus/contracts";
import { clientCommand, printJson } from "../client-command.js";
import { requestError } from "../connection.js";
import { CliError, ExitCode } from "../errors.js";
import type { CliIo } from "../io.js";
import { formatTable } from "../table.js";

/** How long the posture may take: healthz runs every check with its own 2 s bound. */
const POSTURE_TIMEOUT_MS = 15_000;

function known<T>(value: T | null, show: (v: T) => string = String): string {
  return value === null ? "unknown" : show(value);
}

function onOff(value: boolean | null): string {
  return known(value, (v) => (v ? "on" : "off"));
}

/** Prints the posture for a human: the verdict first, then what it rests on. */
export function printPosture(io: CliIo, p: HealthzPostureReply): void {
  io.out(`bus:       ${p.ready ? "READY" : "NOT READY"} (checked ${p.checked_at}, healthz ${p.version})`);
  const size = p.mode === "cluster" ? `cluster of ${known(p.cluster_size)}` : known(p.mode);
  io.out(`server:    nats-server ${known(p.server_version)}, ${size}, meta leader ${p.mode === "single" && p.meta_leader === null ? "n/a" : known(p.meta_leader)}`);
  const atRest = p.at_rest.encrypted === null ? "unknown" : p.at_rest.encrypted ? `encrypted (${p.at_rest.cipher ?? "cipher unknown"})` : "NOT encrypted";
  io.out(`at rest:   ${atRest}`);
  io.out(`TLS:       client ${onOff(p.tls.client)}, routes ${p.tls.route === null && p.mode === "single" ? "n/a" : onOff(p.tls.route)}`);
  io.out(`fsync:     ${known(p.sync_policy)}`);
  io.out("");
  io.out(
    formatTable([
      ["BUCKET", "STREAM", "REPLICAS", "CURRENT", "LEADER", "OK"],
      ...p.buckets.map((b) => [b.name, b.stream, known(b.replicas), String(b.current), known(b.leader), b.ok ? "yes" : "NO"]),
    ]),
  );
  io.out("");
  io.out(formatTable([["SERVICE", "INSTANCES", "VERSIONS"], ...p.services.map((s) => [s.name, String(s.instances), s.versions.join(", ") || "-"])]));
  const failing = p.checks.filter((c) => !c.ok);
  if (failing.length > 0) {
    io.out("");
    io.out("failing checks:");
    for (const c of failing) io.out(`  ${c.name}: ${c.detail ?? "failed"}`);
  }
}

/** `unibus status`: the bus posture from the healthz service (admin only). */
export const statusCommand = clientCommand({
  name: "status",
  command: "status",
  summary: "show the bus posture: readiness, security settings, buckets, services (admin)",
  usage: [
    "Usage: unibus status [--json]",
    "",
    "Asks the healthz service for the bus posture (healthz.posture, admin-signed):",
    "readiness with every check, nats-server version and mode, the meta leader,",
    "encryption at rest, TLS on client and route ports, the fsync policy, each",
    "bucket's replicas and leader, and each service's instance count.",
    "Exits 0 when the bus is ready, 1 when it is not or the request fails.",
  ].join("\n"),
  positionals: [],
  async run({ client, json, io }) {
    let posture: HealthzPostureReply;
    try {
      posture = await client.request<HealthzPostureReply>(Subjects.healthz.posture, {}, { timeoutMs: POSTURE_TIMEOUT_MS });
    } catch (err) {
      if (err instanceof CliError) throw err;
      throw requestError(err, "healthz");
    }
    if (json) printJson(io, posture);
    else printPosture(io, posture);
    return posture.ready ? ExitCode.ok : ExitCode.failure;
  },
});
