import type { MembershipRoomsCreateRequest, MembershipRoomsGetReply } from "@unibus/contracts";
import { toBase64Url } from "@unibus/crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { UnibusError } from "@unibus/contracts";
import { RoomLogError, RoomLogErrorReason, UsersLogSync, verifyRoomLog } from "@unibus/sdk";
import type { PinnedRoomLogHead, RoomRole, UnibusClient, VerifiedRoomLog, VerifiedUsersLog } from "@unibus/sdk";
import { stringFlag } from "../args.js";
import type { ParsedFlags } from "../args.js";
import { clientCommand, principalArg, printJson } from "../client-command.js";
import { commandGroup } from "../command.js";
import type { Command } from "../command.js";
import { ExitCode, UsageError } from "../errors.js";
import { printPaged, readWholeLog } from "../paged-output.js";
import { ensurePrivateDir, resolveHome, writePrivateFile } from "../home.js";
import type { HomeLayout } from "../home.js";
import type { CliIo } from "../io.js";
import { formatTable } from "../table.js";
import { usersLogPinFile } from "./users.js";

interface RoomRow {
  id: string;
  name: string;
  subject: string;
  policy: { persist: boolean; encrypt: boolean };
  createdBy: string;
}

function policyText(p: RoomRow["policy"]): string {
  return [p.persist ? "persist" : "live", p.encrypt ? "encrypted" : "plaintext"].join(",");
}

const roomId = (positionals: readonly string[]): string => positionals[0] ?? "";

type QuotaRequest = NonNullable<MembershipRoomsCreateRequest["quota"]>;

/** `rooms create` flags → quota fields; the service checks ranges and ceilings. */
const QUOTA_FLAGS = { "max-bytes": "maxBytes", "max-msgs": "maxMsgs", "max-msg-size": "maxMsgSize", "max-age": "maxAgeSeconds" } as const satisfies Record<string, keyof QuotaRequest>;

function quotaFlags(flags: ParsedFlags): QuotaRequest | undefined {
  const quota: QuotaRequest = {};
  for (const [flag, field] of Object.entries(QUOTA_FLAGS) as [keyof typeof QUOTA_FLAGS, keyof QuotaRequest][]) {
    const raw = stringFlag(flags, flag);
    if (raw === undefined) continue;
    if (!/^[0-9]{1,16}$/.test(raw)) throw new UsageError(`--${flag} must be a whole number, got ${raw}`, "rooms create");
    quota[field] = Number(raw);
  }
  return Object.keys(quota).length === 0 ? undefined : quota;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"] as const;

function bytesText(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${UNITS[u]}`;
}

/** An exact duration, in the largest unit that divides it. */
function ageText(seconds: number): string {
  if (seconds >= 86_400 && seconds % 86_400 === 0) return `${seconds / 86_400}d`;
  if (seconds >= 3600 && seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds >= 60 && seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}

/** An elapsed time, rounded down to its largest unit. */
function elapsedText(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}

function percent(used: number, limit: number): string {
  return `${((100 * used) / limit).toFixed(1)}%`;
}

/** The quota-vs-usage lines of `rooms info`. */
function quotaLines(reply: MembershipRoomsGetReply, now: number): string[] {
  const { room, quota, usage } = reply;
  const head = `room ${room.id} (${room.name}, ${policyText(room.policy)})`;
  if (!room.policy.persist) return [head, "live-only room: no stream, nothing stored, no quota"];
  if (usage === undefined) return [head, "no stream found for this persisted room"];
  const oldest = usage.oldestAt === undefined ? "-" : elapsedText(Math.max(0, Math.floor((now - Date.parse(usage.oldestAt)) / 1000)));
  if (quota === undefined) return [head, `stored ${bytesText(usage.bytes)} in ${usage.messages} messages; oldest ${oldest}; no quota (stream predates quotas)`];
  const rows = [
    ["", "USED", "LIMIT", "USE"],
    ["bytes", bytesText(usage.bytes), bytesText(quota.maxBytes), percent(usage.bytes, quota.maxBytes)],
    ["messages", String(usage.messages), String(quota.maxMsgs), percent(usage.messages, quota.maxMsgs)],
    ["max frame", "-", bytesText(quota.maxMsgSize), "-"],
    ["max age", `oldest ${oldest}`, ageText(quota.maxAgeSeconds), "-"],
  ];
  const full = usage.bytes >= quota.maxBytes || usage.messages >= quota.maxMsgs;
  return [head, formatTable(rows), ...(full ? ["FULL: new messages are refused (room_full) until old ones expire"] : [])];
}

const roomsCreate = clientCommand({
  name: "create",
  command: "rooms create",
  summary: "create a room you own",
  usage:
    "Usage: unibus rooms create <name> [--persist [--max-bytes N] [--max-msgs N] [--max-msg-size N] [--max-age SECONDS]] [--no-encrypt] [--json]\n\nCreates a room owned by you. Its policy and quota are fixed at creation; quota fields you omit take the service defaults, and none may exceed the service's ceilings.",
  optionsHelp: [
    "  --persist             keep the room's (encrypted) frames in a JetStream stream",
    "  --no-encrypt          members send plaintext frames (default: end-to-end encrypted)",
    "  --max-bytes N         persisted rooms: most bytes stored",
    "  --max-msgs N          persisted rooms: most messages stored",
    "  --max-msg-size N      persisted rooms: largest frame in bytes",
    "  --max-age SECONDS     persisted rooms: messages older than this expire",
  ],
  options: { persist: { type: "boolean" }, "no-encrypt": { type: "boolean" }, "max-bytes": { type: "string" }, "max-msgs": { type: "string" }, "max-msg-size": { type: "string" }, "max-age": { type: "string" } },
  positionals: ["name"],
  validate: (flags) => void quotaFlags(flags),
  async run({ client, flags, positionals, json, io }) {
    const policy = { persist: flags.persist === true, encrypt: flags["no-encrypt"] !== true };
    const quota = quotaFlags(flags);
    const reply = await client.rooms.create(positionals[0] ?? "", policy, quota === undefined ? {} : { quota });
    if (json) return printJson(io, reply);
    io.out(`created room ${reply.room.id} (${reply.room.name}, ${policyText(reply.room.policy)}); subject ${reply.room.subject}.>`);
    if (reply.quota !== undefined) io.out(`quota: ${bytesText(reply.quota.maxBytes)}, ${reply.quota.maxMsgs} messages, frames up to ${bytesText(reply.quota.maxMsgSize)}, kept ${ageText(reply.quota.maxAgeSeconds)}`);
    return ExitCode.ok;
  },
});

const roomsList = clientCommand({
  name: "list",
  command: "rooms list",
  summary: "list your rooms (--all: every room, admins only)",
  usage: "Usage: unibus rooms list [--all] [--json]\n\nPrints the rooms page by page as they arrive.",
  optionsHelp: ["  --all                 every room (admins only)"],
  options: { all: { type: "boolean" } },
  positionals: [],
  async run({ client, flags, json, io }) {
    const all = flags.all === true ? { all: true } : {};
    return printPaged(io, json, {
      fetch: (cursor) => client.rooms.list(cursor === undefined ? all : { ...all, cursor }),
      items: (page) => page.rooms,
      key: (r) => r.room.id,
      header: ["ID", "NAME", "ROLE", "POLICY", "CREATED BY"],
      row: ({ room, role }) => [room.id, room.name, role ?? "-", policyText(room.policy), room.createdBy],
    });
  },
});

const roomsGet = clientCommand({
  name: "get",
  command: "rooms get",
  summary: "show a room and its members",
  usage: "Usage: unibus rooms get <id> [--json]",
  positionals: ["id"],
  async run({ client, positionals, json, io }) {
    const id = roomId(positionals);
    const first = await client.rooms.get(id);
    if (json) {
      // One JSON object as before, with every page's members.
      const members: typeof first.members = [];
      for await (const m of client.rooms.members(id)) members.push(m);
      return printJson(io, { room: first.room, members });
    }
    const r: RoomRow = first.room;
    io.out(`room ${r.id} (${r.name}, ${policyText(r.policy)}); subject ${r.subject}.>; created by ${r.createdBy}`);
    return printPaged(io, false, {
      fetch: async (cursor) => (cursor === undefined ? first : client.rooms.get(id, { cursor })),
      items: (page) => page.members,
      key: (m) => m.principal,
      header: ["PRINCIPAL", "ROLE", "ADDED BY"],
      row: (m) => [m.principal, m.role, m.addedBy],
    });
  },
});

const roomsInfo = clientCommand({
  name: "info",
  command: "rooms info",
  summary: "show a room's storage use against its quota",
  usage: "Usage: unibus rooms info <id> [--json]\n\nA persisted room's stored bytes and messages against its quota, and the age of its oldest message.",
  positionals: ["id"],
  async run({ client, positionals, json, io }) {
    const reply = await client.rooms.get(roomId(positionals));
    if (json) return printJson(io, { room: reply.room, ...(reply.quota === undefined ? {} : { quota: reply.quota }), ...(reply.usage === undefined ? {} : { usage: reply.usage }) });
    for (const line of quotaLines(reply, Date.now())) io.out(line);
    return ExitCode.ok;
  },
});

/** Where `rooms log --verify` keeps each room's verified head, so a later rollback or fork is refused. */
function headsFile(home: HomeLayout): string {
  return join(home.root, "room-log-heads.json");
}

/**
 * Checks `log` against the head this home verified before and pins the new
 * one (threat: a service that later shows a shorter or rewritten log).
 */
async function checkAndPin(io: CliIo, log: VerifiedRoomLog): Promise<void> {
  const home = resolveHome(io.env, io.cwd);
  let heads: Record<string, PinnedRoomLogHead> = {};
  try {
    heads = JSON.parse(await readFile(headsFile(home), "utf8")) as Record<string, PinnedRoomLogHead>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const pinned = heads[log.roomId];
  if (pinned !== undefined) {
    if (pinned.seq > log.headSeq) throw new RoomLogError(log.roomId, RoomLogErrorReason.rollback, `head ${pinned.seq} was verified before, the service shows ${log.headSeq}`);
    if (toBase64Url(log.hashAt(pinned.seq)!) !== pinned.hash) throw new RoomLogError(log.roomId, RoomLogErrorReason.fork, "the entry verified before has changed", pinned.seq);
    if (pinned.seq === log.headSeq) return;
  }
  heads[log.roomId] = { seq: log.headSeq, hash: toBase64Url(log.headHash) };
  await ensurePrivateDir(home.root);
  await writePrivateFile(headsFile(home), `${JSON.stringify(heads, null, 2)}\n`);
}

/** The users log verified from this home's pinned root; none on a bus without one (admin entries then fail). */
async function verifiedAdmins(client: UnibusClient, io: CliIo): Promise<VerifiedUsersLog | undefined> {
  try {
    return await new UsersLogSync((from, limit) => client.users.log(from, limit), { pin: usersLogPinFile(io) }).sync();
  } catch (err) {
    if (err instanceof UnibusError && err.reason === RoomLogErrorReason.missing) return undefined;
    throw err;
  }
}

const roomsLog = clientCommand({
  name: "log",
  command: "rooms log",
  summary: "show a room's membership log; --verify checks every signature and the chain",
  usage:
    "Usage: unibus rooms log <id> [--verify] [--json]\n\nEvery create, invite, removal and leave of the room, each its actor's own signed request,\nhash-chained (contracts/specs/membership-log.md). With --verify the chain, every signature\nand every actor's right to act are checked here, and the head is pinned in the home\ndirectory so a later shorter or rewritten log is refused; any failure exits non-zero.",
  optionsHelp: ["  --verify              verify the chain, the signatures and the rules"],
  options: { verify: { type: "boolean" } },
  positionals: ["id"],
  async run({ client, flags, positionals, json, io }) {
    const id = roomId(positionals);
    const entries = await readWholeLog((from) => client.rooms.log(id, from));
    // Throws a coded RoomLogError naming the first bad entry: nothing is printed as verified.
    // Admin entries verify against the users log, itself verified from its pinned root.
    const verified = flags["verify"] === true ? verifyRoomLog(id, entries, { adminAuthority: await verifiedAdmins(client, io) }) : undefined;
    if (verified !== undefined) await checkAndPin(io, verified);
    const summary = verified === undefined ? undefined : { verified: true, headSeq: verified.headSeq, head: toBase64Url(verified.headHash), members: Object.fromEntries([...verified.members].sort()) };
    if (json) return printJson(io, { roomId: id, entries, ...(summary === undefined ? {} : summary) });
    io.out(formatTable([["SEQ", "OP", "ACTOR", "TARGET", "ROLE", "AT"], ...entries.map((e) => [String(e.seq), e.op + (e.actorRole === "admin" ? " (admin)" : ""), e.signer, e.target, e.role ?? "-", e.at])]));
    if (summary === undefined) io.out("not verified (use --verify)");
    else io.out(`verified: ${entries.length} entries, head ${summary.headSeq} ${summary.head}, ${verified!.members.size} members`);
    return ExitCode.ok;
  },
});

const ROOM_ROLES: readonly RoomRole[] = ["owner", "member"];

const roomsInvite = clientCommand({
  name: "invite",
  command: "rooms invite",
  summary: "add an active user to a room (owners and admins)",
  usage: "Usage: unibus rooms invite <id> <principal> [--role owner|member] [--json]",
  optionsHelp: ["  --role ROLE           owner or member (default member)"],
  options: { role: { type: "string" } },
  positionals: ["id", "principal"],
  validate(flags, positionals) {
    principalArg(positionals[1] ?? "", "rooms invite");
    const role = stringFlag(flags, "role");
    if (role !== undefined && !ROOM_ROLES.includes(role as RoomRole)) throw new UsageError(`--role must be owner or member, got ${role}`, "rooms invite");
  },
  async run({ client, flags, positionals, json, io }) {
    const role = stringFlag(flags, "role");
    const reply = await client.rooms.invite(roomId(positionals), principalArg(positionals[1] ?? "", "rooms invite"), role as RoomRole | undefined);
    if (json) return printJson(io, reply);
    io.out(`added ${reply.member.principal} to ${reply.member.roomId} as ${reply.member.role}`);
    return ExitCode.ok;
  },
});

const roomsRemove = clientCommand({
  name: "remove",
  command: "rooms remove",
  validate: (_flags, positionals) => void principalArg(positionals[1] ?? "", "rooms remove"),
  summary: "remove a member from a room (owners and admins)",
  usage: "Usage: unibus rooms remove <id> <principal> [--json]",
  positionals: ["id", "principal"],
  async run({ client, positionals, json, io }) {
    const reply = await client.rooms.remove(roomId(positionals), principalArg(positionals[1] ?? "", "rooms remove"));
    if (json) return printJson(io, reply);
    io.out(`removed ${reply.principal} from ${reply.roomId}`);
    return ExitCode.ok;
  },
});

const roomsLeave = clientCommand({
  name: "leave",
  command: "rooms leave",
  summary: "leave a room",
  usage: "Usage: unibus rooms leave <id> [--json]",
  positionals: ["id"],
  async run({ client, positionals, json, io }) {
    const reply = await client.rooms.leave(roomId(positionals));
    if (json) return printJson(io, reply);
    io.out(`left ${reply.roomId}`);
    return ExitCode.ok;
  },
});

/** `unibus rooms create|list|get|info|log|invite|remove|leave`, over the signed membership API. */
export const roomsCommandGroup: Command = commandGroup({
  name: "rooms",
  summary: "create rooms and manage their members",
  intro: "Usage: unibus rooms <command> [args] [--json]\n\nRooms and their members (docs/architecture.md §5), through the membership service as your identity.",
  subcommands: [roomsCreate, roomsList, roomsGet, roomsInfo, roomsLog, roomsInvite, roomsRemove, roomsLeave],
});
