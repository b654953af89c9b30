// healthz under the exact permissions `unibus up` gives it, on the production
// callout configuration: readiness, metrics from every service, and
// `unibus status` for an admin (and not for a member).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { ExitCode, runCli } from "@unibus/cli";
import type { HealthzPostureReply } from "@unibus/contracts";
import { BUS_STREAMS, createHealthzService } from "@unibus/healthz";
import type { RunningHealthz } from "@unibus/healthz";
import { recordingIo } from "@unibus/cli/test-io";
import { cliIdentities, startE2eBus } from "./bus-with-services.js";
import type { CliIdentities, E2eBus } from "./bus-with-services.js";

describe("healthz on a live bus", () => {
  let e2e: E2eBus;
  let healthz: RunningHealthz;
  let ids: CliIdentities;

  beforeAll(async () => {
    e2e = await startE2eBus();
    ids = await cliIdentities(e2e.bus, "unibus-e2e-health-");
    // This bus runs no replica gateway, so its buckets and PING are not required here.
    healthz = await createHealthzService(await e2e.bus.serviceConnection("healthz"), { logger: pino({ level: "silent" }) }, {
      http: { host: "127.0.0.1", port: 0 },
      monitorUrls: [`http://127.0.0.1:${e2e.bus.server.monitorPort}`],
      streams: BUS_STREAMS.filter((s) => !s.bucket.startsWith("replica_")),
      services: ["auth-callout", "membership", "keys", "blobs"],
      atRest: { encrypted: false, cipher: null },
    });
  }, 120_000);
  afterAll(async () => {
    await healthz?.stop();
    await e2e?.stop();
    await ids?.remove();
  });

  it("is ready with only its read-only grants: JetStream info, bucket stream info, micro PING", async () => {
    const res = await fetch(`${healthz.httpUrl}/readyz`);
    const body = (await res.json()) as { checks: Array<{ name: string; ok: boolean; detail?: string }> };
    expect(body.checks.filter((c) => !c.ok)).toEqual([]);
    expect(res.status).toBe(200);
  });

  it("/metrics carries every service instance, the auth callout included", async () => {
    const families = parsePrometheusTextFormat(await (await fetch(`${healthz.httpUrl}/metrics`)).text());
    const requests = families.find((f) => f.name === "unibus_requests_total");
    const instances = new Set(families.flatMap((f) => f.metrics.map((m) => m.labels?.["service_instance"])));
    // auth-callout, membership, keys, blobs and healthz each answered $SRV.METRICS.
    expect(instances.size).toBeGreaterThanOrEqual(5);
    expect(requests?.metrics.some((m) => m.labels?.["service"] === "membership")).toBe(true);
    // The service-specific counters are registered where their events happen.
    for (const name of ["unibus_kicks_total", "unibus_rekeys_total", "unibus_blob_bytes_total", "unibus_kv_errors_total", "unibus_service_info"]) {
      expect(families.map((f) => f.name), name).toContain(name);
    }
  });

  it("`unibus status` shows an admin the posture and exits 0 when ready", async () => {
    const env = await ids.env("admin", e2e.bus.adminIdentity);
    const io = recordingIo({ env, cwd: ids.dir });
    expect(await runCli(["status"], io), io.all()).toBe(ExitCode.ok);
    const out = io.stdout.join("\n");
    expect(out).toMatch(/^bus: +READY/m);
    expect(out).toMatch(/^at rest: +NOT encrypted/m);
    expect(out).toMatch(/^users +KV_users +1 +1 /m);
    expect(out).toMatch(/^membership +1 /m);

    const json = recordingIo({ env, cwd: ids.dir });
    expect(await runCli(["status", "--json"], json), json.all()).toBe(ExitCode.ok);
    const posture = JSON.parse(json.stdout.join("\n")) as HealthzPostureReply;
    expect(posture).toMatchObject({ ready: true, mode: "single", tls: { client: false } });
  });

  it("`unibus status` refuses a member (exit 1, forbidden)", async () => {
    const member = await e2e.bus.addMember("status-member");
    const io = recordingIo({ env: await ids.env("member", member.identity), cwd: ids.dir });
    expect(await runCli(["status"], io)).toBe(ExitCode.failure);
    expect(io.stderr.join("\n")).toMatch(/forbidden/);
  });
});
