import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { toBase64Url } from "@unibus/crypto";
import { UsersLogSync } from "@unibus/sdk";
import type { PinnedUsersLog, UserRole, UsersLogPinStore } from "@unibus/sdk";
import { stringFlag } from "../args.js";
import { clientCommand, principalArg, printJson } from "../client-command.js";
import { commandGroup } from "../command.js";
import type { Command } from "../command.js";
import { ExitCode, UsageError } from "../errors.js";
import { ensurePrivateDir, resolveHome, writePrivateFile } from "../home.js";
import type { CliIo } from "../io.js";
import { printPaged, readWholeLog } from "../paged-output.js";
import { formatTable } from "../table.js";

interface UserRow {
  principal: string;
  handle: string;
  role: string;
  status: string;
  addedAt: string;
}

function printUsers(io: CliIo, users: readonly UserRow[]): number {
  io.out(formatTable([["PRINCIPAL", "HANDLE", "ROLE", "STATUS", "ADDED"], ...users.map((u) => [u.principal, u.handle, u.role, u.status, u.addedAt])]));
  return ExitCode.ok;
}

const ROLES: readonly UserRole[] = ["admin", "member"];

const usersAdd = clientCommand({
  name: "add",
  command: "users add",
  summary: "allow a principal to connect (admin only)",
  usage: "Usage: unibus users add <principal> --handle H [--role admin|member] [--json]\n\nAdds a principal to the allowlist. Adding one already listed is a conflict\nthat changes nothing.",
  optionsHelp: ["  --handle H            human-readable name (required)", "  --role ROLE           admin or member (default member)"],
  options: { handle: { type: "string" }, role: { type: "string" } },
  positionals: ["principal"],
  validate(flags, positionals) {
    principalArg(positionals[0] ?? "", "users add");
    const handle = stringFlag(flags, "handle");
    if (handle === undefined || handle === "") throw new UsageError("--handle is required", "users add");
    const role = stringFlag(flags, "role") ?? "member";
    if (!ROLES.includes(role as UserRole)) throw new UsageError(`--role must be admin or member, got ${role}`, "users add");
  },
  async run({ client, flags, positionals, json, io }) {
    const principal = principalArg(positionals[0] ?? "", "users add");
    const reply = await client.users.add(principal, stringFlag(flags, "handle") ?? "", (stringFlag(flags, "role") ?? "member") as UserRole);
    if (json) return printJson(io, reply);
    io.out(`added ${reply.user.role} ${reply.user.principal} (${reply.user.handle})`);
    return ExitCode.ok;
  },
});

const usersList = clientCommand({
  name: "list",
  command: "users list",
  summary: "list every user, revoked ones included (admin only)",
  usage: "Usage: unibus users list [--json]\n\nPrints the allowlist page by page as it arrives.",
  positionals: [],
  async run({ client, json, io }) {
    return printPaged(io, json, {
      fetch: (cursor) => client.users.list(cursor === undefined ? {} : { cursor }),
      items: (page) => page.users,
      key: (u) => u.principal,
      header: ["PRINCIPAL", "HANDLE", "ROLE", "STATUS", "ADDED"],
      row: (u) => [u.principal, u.handle, u.role, u.status, u.addedAt],
    });
  },
});

const usersGet = clientCommand({
  name: "get",
  command: "users get",
  validate: (_flags, positionals) => void principalArg(positionals[0] ?? "", "users get"),
  summary: "show one user (admin only)",
  usage: "Usage: unibus users get <principal> [--json]",
  positionals: ["principal"],
  async run({ client, positionals, json, io }) {
    const reply = await client.users.get(principalArg(positionals[0] ?? "", "users get"));
    if (json) return printJson(io, reply.user);
    return printUsers(io, [reply.user]);
  },
});

const usersRevoke = clientCommand({
  name: "revoke",
  command: "users revoke",
  validate: (_flags, positionals) => void principalArg(positionals[0] ?? "", "users revoke"),
  summary: "revoke a user and close its live connections (admin only)",
  usage: "Usage: unibus users revoke <principal> [--json]\n\nFlips the user to revoked (kept for audit) and kicks its live connections.",
  positionals: ["principal"],
  async run({ client, positionals, json, io }) {
    const reply = await client.users.revoke(principalArg(positionals[0] ?? "", "users revoke"));
    if (json) return printJson(io, reply);
    io.out(`revoked ${reply.user.principal} (${reply.user.handle}); closed ${reply.kick.kicked} live connection(s)`);
    return ExitCode.ok;
  },
});

/**
 * The users log's root and verified head, pinned in the home directory
 * (threat: a service that later shows another root, a shorter or a
 * rewritten log, to name an extra admin).
 */
export function usersLogPinFile(io: CliIo): UsersLogPinStore {
  const home = resolveHome(io.env, io.cwd);
  const file = join(home.root, "users-log-pin.json");
  return {
    async get() {
      try {
        return JSON.parse(await readFile(file, "utf8")) as PinnedUsersLog;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw err;
      }
    },
    async set(pin) {
      await ensurePrivateDir(home.root);
      await writePrivateFile(file, `${JSON.stringify(pin, null, 2)}\n`);
    },
  };
}

const usersLog = clientCommand({
  name: "log",
  command: "users log",
  summary: "show the users log; --verify checks it from its root (any user)",
  usage:
    "Usage: unibus users log [--verify] [--root R] [--json]\n\nEvery allowlist change, each the acting admin's own signed request, hash-chained from\nentry 0: the bootstrap identity's request seeding admin #0 (contracts/specs/membership-log.md).\nWith --verify the chain, every signature and every actor's admin right are checked here;\nthe root and head are pinned in the home directory (or the root given by --root: the\nbootstrap principal or entry 0's hash), and another root, a shorter or a rewritten log\nis refused; any failure exits non-zero.",
  optionsHelp: ["  --verify              verify the chain, the signatures and the rules", "  --root R              require this root (bootstrap principal or entry 0 hash)"],
  options: { verify: { type: "boolean" }, root: { type: "string" } },
  positionals: [],
  async run({ client, flags, json, io }) {
    const root = stringFlag(flags, "root");
    const entries = await readWholeLog((from) => client.users.log(from));
    let summary: { verified: true; headSeq: number; head: string; root: string; admins: string[] } | undefined;
    if (flags["verify"] === true) {
      // Throws a coded UsersLogError naming the first bad entry: nothing is printed as verified.
      const sync = new UsersLogSync((from, limit) => Promise.resolve({ headSeq: entries.length - 1, entries: entries.slice(from, from + limit) }), {
        pin: usersLogPinFile(io),
        ...(root === undefined ? {} : { trustedRoot: root }),
      });
      const log = await sync.sync();
      summary = { verified: true, headSeq: log.headSeq, head: toBase64Url(log.headHash), root: log.rootHash!, admins: [...log.activeUsers].filter(([, r]) => r === "admin").map(([p]) => p).sort() };
    }
    if (json) return printJson(io, { entries, ...(summary ?? {}) });
    io.out(formatTable([["SEQ", "OP", "ACTOR", "TARGET", "ROLE", "AT"], ...entries.map((e) => [String(e.seq), e.op, e.signer, e.target, e.role ?? "-", e.at])]));
    if (summary === undefined) io.out("not verified (use --verify)");
    else io.out(`verified: ${entries.length} entries from root ${summary.root}, head ${summary.headSeq} ${summary.head}, ${summary.admins.length} active admin(s)`);
    return ExitCode.ok;
  },
});

/** `unibus users add|list|get|revoke|log`: the allowlist, over the signed membership API. */
export const usersCommandGroup: Command = commandGroup({
  name: "users",
  summary: "manage who may connect (admin only; log: any user)",
  intro: "Usage: unibus users <command> [args] [--json]\n\nThe users allowlist (docs/architecture.md §3), through the membership service as your identity.",
  subcommands: [usersAdd, usersList, usersGet, usersRevoke, usersLog],
});
