import type { MembershipAuditDenialsReply, MembershipAuditDenialsRequest } from "@unibus/contracts";
import { Subjects } from "@unibus/contracts";
import { stringFlag } from "../args.js";
import type { ParsedFlags } from "../args.js";
import { clientCommand, principalArg, printJson } from "../client-command.js";
import { commandGroup } from "../command.js";
import type { Command } from "../command.js";
import { ExitCode, UsageError } from "../errors.js";
import { formatTable } from "../table.js";

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * `10m`, `2h`, `30s`, `7d` → milliseconds; anything else is a usage error.
 * The audit stream keeps at most 7 days, so a longer window asks for nothing more.
 */
export function parseSince(raw: string): number {
  const m = /^([1-9][0-9]{0,5})([smhd])$/.exec(raw);
  if (m === null) throw new UsageError(`--since must be a duration such as 30s, 10m, 2h or 7d, got ${JSON.stringify(raw)}`, "audit denials");
  return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
}

const auditDenials = clientCommand({
  name: "denials",
  command: "audit denials",
  summary: "show refused logins with their reason (admin only)",
  usage:
    "Usage: unibus audit denials [--since 10m] [--principal U…] [--limit N] [--json]\n\n" +
    "Lists refused logins, oldest first: reason (unknown_principal, revoked,\n" +
    "bad_signature, malformed, directory_unavailable, rate_limited), principal,\n" +
    "client address, server and time. The refused client itself is only ever\n" +
    'told "Authorization Violation". Retries answered from the denial cache are\n' +
    "folded into one record per second (REPEATS).",
  optionsHelp: [
    "  --since DURATION      how far back: 30s, 10m, 2h, 7d (default 10m)",
    "  --principal U…        only refusals of this principal",
    "  --limit N             most records (1-1000, default 200)",
  ],
  options: { since: { type: "string" }, principal: { type: "string" }, limit: { type: "string" } },
  positionals: [],
  validate(flags) {
    requestOf(flags, Date.now());
  },
  async run({ client, flags, json, io }) {
    const reply = await client.request<MembershipAuditDenialsReply>(Subjects.membership.auditDenials, requestOf(flags, Date.now()));
    if (json) return printJson(io, reply);
    if (reply.denials.length === 0) {
      io.out("no refused logins in that window");
      return ExitCode.ok;
    }
    io.out(
      formatTable([
        ["TIME", "REASON", "PRINCIPAL", "ADDRESS", "SERVER", "REPEATS"],
        ...reply.denials.map((d) => [d.time, d.reason, d.principal ?? "-", d.address, d.server, String(d.repeats ?? 0)]),
      ]),
    );
    if (reply.truncated) io.out(`(more records match: showing the first ${reply.denials.length}; narrow --since or raise --limit)`);
    return ExitCode.ok;
  },
});

function requestOf(flags: ParsedFlags, now: number): MembershipAuditDenialsRequest {
  const since = new Date(now - parseSince(stringFlag(flags, "since") ?? "10m")).toISOString();
  const principal = stringFlag(flags, "principal");
  const limitRaw = stringFlag(flags, "limit");
  let limit: number | undefined;
  if (limitRaw !== undefined) {
    limit = Number(limitRaw);
    if (!/^[0-9]+$/.test(limitRaw) || limit < 1 || limit > 1000) throw new UsageError(`--limit must be an integer from 1 to 1000, got ${limitRaw}`, "audit denials");
  }
  return {
    since,
    ...(principal !== undefined ? { principal: principalArg(principal, "audit denials") } : {}),
    ...(limit !== undefined ? { limit } : {}),
  };
}

/** `unibus audit denials`: the refused-login trail, through the membership service. */
export const auditCommandGroup: Command = commandGroup({
  name: "audit",
  summary: "see refused logins and why (admin only)",
  intro: "Usage: unibus audit <command> [args] [--json]\n\nAudit trails recorded by the bus, read through the membership service as your identity.",
  subcommands: [auditDenials],
});
