import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { pino } from "pino";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { Subjects, decodeReply } from "@unibus/contracts";
import type { HealthzPostureReply, HealthzStatusReply } from "@unibus/contracts";
import { SigningKey, envelopeToHeaders, signEnvelope } from "@unibus/crypto";
import { startService } from "@unibus/kit";
import type { RunningService } from "@unibus/kit";
import { eventually, startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { checkReadiness } from "./probe.js";
import { createHealthzService } from "./service.js";
import type { RunningHealthz } from "./service.js";
import { testDependency } from "./test-dependency.js";
import packageJson from "../package.json" with { type: "json" };

const admin = SigningKey.generate();
const member = SigningKey.generate();
const silent = pino({ level: "silent" });

let server: TestServer;
let nc: NatsConnection;
let running: RunningHealthz;
let dep: RunningService | undefined;

beforeAll(async () => {
  server = await startTestServer({
    jetstream: true,
    config: { jetstream: { cipher: "chachapoly", key: "$HZ_TEST_KEY", sync_interval: "always" } },
    env: { HZ_TEST_KEY: "hzTestKey0123456789" },
  });
  nc = await server.connect({ inboxPrefix: `_INBOX.${admin.principal}` });
  await new Kvm(nc).create("hz_state", { history: 1 });
  dep = await startService(nc, testDependency, { logger: silent });
  running = await createHealthzService(
    nc,
    { logger: silent, resolveRole: async (p) => (p === admin.principal ? "admin" : p === member.principal ? "member" : null) },
    {
      http: { host: "127.0.0.1", port: 0 },
      monitorUrls: [`http://127.0.0.1:${server.monitorPort}`],
      streams: [{ bucket: "hz_state", stream: "KV_hz_state" }],
      services: ["hz-dep"],
      atRest: { encrypted: true, cipher: "chachapoly" },
      panel: { wsUrl: "ws://127.0.0.1:4280" },
    },
  );
}, 60_000);

afterAll(async () => {
  await running?.stop();
  await dep?.stop();
  await server?.stop();
});

function url(path: string): string {
  if (running.httpUrl === undefined) throw new Error("no HTTP server");
  return `${running.httpUrl}${path}`;
}

async function signedRequest(signer: SigningKey, subject: string, body: unknown) {
  const data = new TextEncoder().encode(JSON.stringify(body));
  const h = natsHeaders();
  for (const [k, v] of Object.entries(envelopeToHeaders(signEnvelope(signer, subject, data, Date.now())))) h.set(k, v);
  const conn = signer === admin ? nc : await server.connect({ inboxPrefix: `_INBOX.${signer.principal}` });
  try {
    return await conn.request(subject, data, { timeout: 10_000, headers: h });
  } finally {
    if (conn !== nc) await conn.close();
  }
}

describe("healthz.status", () => {
  it("answers an unsigned request with ok and the healthz version", async () => {
    const reply = decodeReply<HealthzStatusReply>(await nc.request(Subjects.healthz.status, "{}", { timeout: 5_000 }));
    expect(reply).toEqual({ status: "ok", service: "healthz", version: packageJson.version });
  });

  it("rejects a request with unknown fields as a schema violation", async () => {
    const msg = await nc.request(Subjects.healthz.status, JSON.stringify({ verbose: true }), { timeout: 5_000 });
    expect(() => decodeReply(msg)).toThrow(expect.objectContaining({ code: 400, reason: "schema_violation" }));
  });

  it("is listed in $SRV.INFO with its status and posture endpoints and the kit's schema endpoint", async () => {
    const info = (await nc.request("$SRV.INFO.healthz", undefined, { timeout: 5_000 })).json<{ endpoints: Array<{ name: string; subject: string }> }>();
    expect(info.endpoints.map((e) => [e.name, e.subject])).toEqual([
      ["status", Subjects.healthz.status],
      ["posture", Subjects.healthz.posture],
      ["schema", "unibus.v1.healthz.schema"],
    ]);
  });
});

describe("HTTP health", () => {
  it("/livez answers 200 without touching NATS", async () => {
    const res = await fetch(url("/livez"));
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("ok\n");
  });

  it("/readyz answers 200 on a healthy single node with every check passed", async () => {
    const res = await fetch(url("/readyz"));
    const body = (await res.json()) as { ready: boolean; checks: Array<{ name: string; ok: boolean }> };
    expect(res.status).toBe(200);
    expect(body.ready).toBe(true);
    expect(body.checks.map((c) => c.name)).toEqual(["nats", "jetstream", "meta_leader", "bucket:hz_state", "service:hz-dep"]);
  });

  it("/healthz is the posture document: version, mode, at-rest, TLS, sync policy, buckets with leaders, services with counts", async () => {
    const res = await fetch(url("/healthz"));
    expect(res.status).toBe(200);
    const p = (await res.json()) as HealthzPostureReply;
    expect(p).toMatchObject({
      ready: true,
      version: packageJson.version,
      mode: "single",
      cluster_size: 1,
      at_rest: { encrypted: true, cipher: "chachapoly" },
      tls: { client: false, route: null },
      sync_policy: "always",
      services: [{ name: "hz-dep", instances: 1, versions: ["2.0.0"] }],
    });
    expect(p.server_version).toMatch(/^2\.\d+\.\d+/);
    expect(p.buckets).toEqual([{ name: "hz_state", stream: "KV_hz_state", replicas: 1, leader: expect.any(String), current: 1, ok: true }]);
  });

  it("serves the admin panel under /panel/ with its CSP, offering the bus WebSocket URL", async () => {
    const config = await fetch(url("/panel/panel-config.json"));
    expect(config.status).toBe(200);
    expect(await config.json()).toEqual({ wsUrl: "ws://127.0.0.1:4280" });
    const page = await fetch(url("/panel/"));
    // 200 once `npm run panel:build` ran, else a 404 saying to run it; strict headers either way.
    expect([200, 404]).toContain(page.status);
    expect(page.headers.get("content-security-policy")).toContain("script-src 'self'");
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
    // The health paths are unchanged beside it.
    expect((await fetch(url("/livez"))).status).toBe(200);
  });

  it("answers 404 for an unknown path and 405 for a POST", async () => {
    expect((await fetch(url("/nope"))).status).toBe(404);
    expect((await fetch(url("/readyz"), { method: "POST" })).status).toBe(405);
  });

  it("/metrics is Prometheus text with request counters per endpoint and outcome, the error reason included", async () => {
    await nc.request(Subjects.healthz.status, "{}", { timeout: 5_000 });
    await nc.request(Subjects.healthz.status, JSON.stringify({ verbose: true }), { timeout: 5_000 });
    const res = await fetch(url("/metrics"));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/plain");
    const families = parsePrometheusTextFormat(await res.text());
    const requests = families.find((f) => f.name === "unibus_requests_total");
    expect(requests?.type).toBe("COUNTER");
    const series = (outcome: string) =>
      requests?.metrics.filter((m) => m.labels?.["service"] === "healthz" && m.labels["endpoint"] === "status" && m.labels["outcome"] === outcome && m.labels["service_instance"] === running.id);
    expect(Number(series("ok")?.[0]?.value)).toBeGreaterThanOrEqual(1);
    expect(Number(series("schema_violation")?.[0]?.value)).toBeGreaterThanOrEqual(1);
    expect(families.find((f) => f.name === "unibus_request_duration_seconds")?.type).toBe("HISTOGRAM");
  });

  it("/readyz answers 503 naming the service once a required service stops, and 200 again when it is back", async () => {
    await dep?.stop();
    dep = undefined;
    const down = await fetch(url("/readyz"));
    expect(down.status).toBe(503);
    const body = (await down.json()) as { ready: boolean; checks: Array<{ name: string; ok: boolean; detail?: string }> };
    expect(body.checks).toContainEqual({ name: "service:hz-dep", ok: false, detail: "no instance answered PING" });
    expect((await fetch(url("/healthz"))).status).toBe(503);

    dep = await startService(nc, testDependency, { logger: silent });
    await eventually(async () => (await fetch(url("/readyz"))).status, (s) => s === 200, { what: "readyz 200 after the service restarts" });
  });
});

describe("readiness fails closed", () => {
  it("a bucket whose stream does not exist is not ready, and says why", async () => {
    const r = await checkReadiness(nc, { streams: [{ bucket: "absent", stream: "KV_absent" }], services: [], monitorUrls: [], timeoutMs: 1_000 });
    expect(r.ready).toBe(false);
    expect(r.checks).toContainEqual({ name: "bucket:absent", ok: false, detail: expect.stringMatching(/not found/) });
    expect(r.buckets).toEqual([{ name: "absent", stream: "KV_absent", replicas: null, leader: null, current: 0, ok: false }]);
  });

  it("an unreachable monitoring endpoint fails the meta leader check rather than passing it", async () => {
    const r = await checkReadiness(nc, { streams: [], services: [], monitorUrls: ["http://127.0.0.1:1"], timeoutMs: 1_000 });
    expect(r.checks).toContainEqual({ name: "meta_leader", ok: false, detail: "no monitoring endpoint answered" });
    expect(r.ready).toBe(false);
  });
});

describe("healthz.posture", () => {
  it("gives an admin the posture document over NATS", async () => {
    const p = decodeReply<HealthzPostureReply>(await signedRequest(admin, Subjects.healthz.posture, {}));
    expect(p).toMatchObject({ version: packageJson.version, mode: "single", at_rest: { encrypted: true } });
    expect(p.buckets.map((b) => b.name)).toEqual(["hz_state"]);
  });

  it("refuses a signed member with 403", async () => {
    const memberReply = await signedRequest(member, Subjects.healthz.posture, {});
    expect(() => decodeReply(memberReply)).toThrow(expect.objectContaining({ code: 403, reason: "forbidden" }));
  });
});
