import type { RoomRole } from "@unibus/sdk";
import { stringFlag } from "../args.js";
import { clientCommand, principalArg, printJson } from "../client-command.js";
import { commandGroup } from "../command.js";
import type { Command } from "../command.js";
import { ExitCode, UsageError } from "../errors.js";
import { printPaged } from "../paged-output.js";

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

const roomsCreate = clientCommand({
  name: "create",
  command: "rooms create",
  summary: "create a room you own",
  usage: "Usage: unibus rooms create <name> [--persist] [--no-encrypt] [--json]\n\nCreates a room owned by you. Its policy is fixed at creation.",
  optionsHelp: ["  --persist             keep the room's (encrypted) frames in a JetStream stream", "  --no-encrypt          members send plaintext frames (default: end-to-end encrypted)"],
  options: { persist: { type: "boolean" }, "no-encrypt": { type: "boolean" } },
  positionals: ["name"],
  async run({ client, flags, positionals, json, io }) {
    const policy = { persist: flags.persist === true, encrypt: flags["no-encrypt"] !== true };
    const reply = await client.rooms.create(positionals[0] ?? "", policy);
    if (json) return printJson(io, reply);
    io.out(`created room ${reply.room.id} (${reply.room.name}, ${policyText(reply.room.policy)}); subject ${reply.room.subject}.>`);
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

/** `unibus rooms create|list|get|invite|remove|leave`, over the signed membership API. */
export const roomsCommandGroup: Command = commandGroup({
  name: "rooms",
  summary: "create rooms and manage their members",
  intro: "Usage: unibus rooms <command> [args] [--json]\n\nRooms and their members (DESIGN §5), through the membership service as your identity.",
  subcommands: [roomsCreate, roomsList, roomsGet, roomsInvite, roomsRemove, roomsLeave],
});
