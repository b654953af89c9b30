// `unibus audit denials` on a bus with the production callout, membership
// and ACLs: a refused login becomes a record an admin can read, a member
// cannot, and the refused client itself learns nothing more.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import { ExitCode, runCli } from "@unibus/cli";
import type { AuditDenialRecord, MembershipAuditDenialsReply } from "@unibus/contracts";
import { createIdentity, writeIdentityFile } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { startTestBus } from "@unibus/testbus";
import type { TestBus } from "@unibus/testbus";
import { eventually } from "@unibus/testing";
import { recordingIo } from "@unibus/cli/test-io";

describe("unibus audit denials", () => {
  let bus: TestBus;
  let dir: string;
  let adminEnv: Record<string, string>;
  const idFile = async (name: string, identity: Identity): Promise<string> => {
    const path = join(dir, `${name}.id`);
    await writeIdentityFile(path, identity);
    return path;
  };
  const cli = async (argv: string[], env: Record<string, string>): Promise<{ code: number; out: string; err: string }> => {
    const io = recordingIo({ env, cwd: dir });
    const code = await runCli(argv, io);
    return { code, out: io.stdout.join("\n"), err: io.stderr.join("\n") };
  };

  beforeAll(async () => {
    bus = await startTestBus({ logger: pino({ level: process.env.E2E_LOG ?? "silent" }) });
    dir = await mkdtemp(join(tmpdir(), "unibus-e2e-audit-"));
    adminEnv = { UNIBUS_URL: bus.url, UNIBUS_IDENTITY: await idFile("admin", bus.adminIdentity) };
  });
  afterAll(async () => {
    await bus?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("a refused login shows up with its reason, principal, address and server; --json gives the records", async () => {
    const stranger = createIdentity({ label: "stranger" });
    const refused = await cli(["users", "list"], { UNIBUS_URL: bus.url, UNIBUS_IDENTITY: await idFile("stranger", stranger) });
    expect(refused.code).toBe(ExitCode.failure);
    expect(refused.err).toContain(`unibus audit denials --principal ${stranger.principal}`);

    const json = await eventually(
      () => cli(["audit", "denials", "--principal", stranger.principal, "--json"], adminEnv),
      (r) => r.code === ExitCode.ok && (JSON.parse(r.out) as MembershipAuditDenialsReply).denials.length > 0,
      { what: "the stranger's audit record" },
    );
    const reply = JSON.parse(json.out) as MembershipAuditDenialsReply;
    const [record] = reply.denials as [AuditDenialRecord];
    expect(record).toMatchObject({ reason: "unknown_principal", principal: stranger.principal, address: "127.0.0.1" });
    expect(record.server.length).toBeGreaterThan(0);
    expect(Date.now() - Date.parse(record.time)).toBeLessThan(60_000);
    expect(reply.truncated).toBe(false);

    const table = await cli(["audit", "denials", "--since", "5m", "--principal", stranger.principal], adminEnv);
    expect(table.code).toBe(ExitCode.ok);
    expect(table.out).toMatch(/TIME\s+REASON\s+PRINCIPAL\s+ADDRESS\s+SERVER\s+REPEATS/);
    expect(table.out).toMatch(new RegExp(`unknown_principal\\s+${stranger.principal}\\s+127\\.0\\.0\\.1`));
  });

  it("a revoked member's refusals are listed as revoked, and only for the principal asked about", async () => {
    const member = await bus.addMember("leaver");
    await bus.admin.users.revoke(member.principal);
    await expect(bus.connectAs(member.identity)).rejects.toThrow(/authorization/i);
    const r = await eventually(
      () => cli(["audit", "denials", "--principal", member.principal, "--json"], adminEnv),
      (x) => x.code === ExitCode.ok && (JSON.parse(x.out) as MembershipAuditDenialsReply).denials.length > 0,
      { what: "the revoked member's audit record" },
    );
    const { denials } = JSON.parse(r.out) as MembershipAuditDenialsReply;
    expect(denials.every((d) => d.principal === member.principal && d.reason === "revoked")).toBe(true);
  });

  it("a member may not read the trail", async () => {
    const member = await bus.addMember("curious");
    const r = await cli(["audit", "denials"], { UNIBUS_URL: bus.url, UNIBUS_IDENTITY: await idFile("curious", member.identity) });
    expect(r.code).toBe(ExitCode.failure);
    expect(r.err).toMatch(/forbidden/);
  });

  it("a revoked client's SDK backs off exponentially instead of retrying in a tight loop", async () => {
    const member = await bus.addMember("retrier");
    const refusedAt: number[] = [];
    const watching = (async () => {
      for await (const s of member.client.nc.status()) {
        if (s.type === "error" && s.error.name === "AuthorizationError") refusedAt.push(Date.now());
        if (refusedAt.length >= 4) return;
      }
    })();
    await bus.admin.users.revoke(member.principal);
    await eventually(() => refusedAt.length, (n) => n >= 4, { timeoutMs: 15_000, what: "four refused reconnects" });
    await member.client.close();
    await watching;
    const gaps = refusedAt.slice(1).map((t, i) => t - (refusedAt[i] ?? t));
    // Waits after refusals 1, 2, 3 are at least 125, 250 and 500 ms (half of
    // a doubling ceiling); the pre-backoff client retried every 100-350 ms.
    expect(gaps[1]).toBeGreaterThanOrEqual(240);
    expect(gaps[2]).toBeGreaterThanOrEqual(490);
  });

  it("a bad --since or --principal is a usage error before connecting", async () => {
    expect((await cli(["audit", "denials", "--since", "yesterday"], adminEnv)).code).toBe(ExitCode.usage);
    expect((await cli(["audit", "denials", "--principal", "nope"], adminEnv)).code).toBe(ExitCode.usage);
    expect((await cli(["audit", "denials", "--limit", "0"], adminEnv)).code).toBe(ExitCode.usage);
  });
});
