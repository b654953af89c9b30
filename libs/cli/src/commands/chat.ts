import { autoRekey } from "@unibus/sdk";
import type { AutoRekey, Room, RoomMessage, UnibusClient } from "@unibus/sdk";
import { helpOption, parseCommandArgs } from "../args.js";
import type { Command } from "../command.js";
import { connectClientAs, connectionHelp, connectionOptions, requestError, resolveConnectionSettings } from "../connection.js";
import { CliError, ExitCode, UsageError } from "../errors.js";
import { loadIdentityForCli } from "../identity-file.js";
import type { CliIo } from "../io.js";
import { clockTime, prepareRoomKeys } from "../room-session.js";

const HELP = [
  "Usage: unibus chat <roomId>",
  "",
  "Interactive end-to-end encrypted chat in a room you belong to. Lines read",
  "from standard input (a terminal or a pipe) are sent as messages; incoming",
  "messages print as `[HH:MM:SS] <sender>: text` on stdout, rejected frames",
  "and status on stderr. `/quit` (or the end of input) exits.",
  "",
  "Registers your agreement key if the keys service does not have it. As an",
  "owner of a room with no key yet, starts its first epoch, and keeps",
  "rekeying the room on every membership change while the chat runs.",
  "",
  "Options:",
  "  -h, --help            show this help",
  "",
  connectionHelp,
].join("\n");

/** ANSI styling only on a terminal, so piped output stays plain. */
function style(code: string, text: string): string {
  return process.stderr.isTTY === true ? `\u001b[${code}m${text}\u001b[0m` : text;
}

/** Names senders by handle when the caller may read the user list (admins), else by a short principal. */
function senderNames(client: UnibusClient): (principal: string) => Promise<string> {
  const cache = new Map<string, Promise<string>>();
  const short = (p: string): string => `${p.slice(0, 8)}…`;
  return (principal) => {
    let name = cache.get(principal);
    if (name === undefined) {
      name = client.users.get(principal).then(
        (u) => u.user.handle,
        () => short(principal),
      );
      cache.set(principal, name);
    }
    return name;
  };
}

async function printMessages(room: Room, io: CliIo, name: (p: string) => Promise<string>): Promise<void> {
  const sub = room.subscribe();
  const print = async (m: RoomMessage): Promise<void> => io.out(`[${clockTime()}] ${await name(m.sender)}: ${m.string()}`);
  // Names resolve asynchronously; chaining keeps the printed order the delivery order.
  let chain = Promise.resolve();
  for await (const m of sub) chain = chain.then(() => print(m));
  await chain;
}

async function printRejects(room: Room, io: CliIo): Promise<void> {
  for await (const r of room.rejects()) {
    const from = r.sender === undefined ? "" : ` from ${r.sender.slice(0, 8)}…`;
    io.err(style("33", `[${clockTime()}] !! rejected frame: ${r.reason}${from}${r.epoch === undefined ? "" : ` (epoch ${r.epoch})`}`));
  }
}

/** `unibus chat <roomId>`: a terminal client of one E2E room, on the public SDK only. */
export const chatCommand: Command = {
  name: "chat",
  summary: "chat in an end-to-end encrypted room (stdin → room → stdout)",
  help: HELP,
  async run(args, io) {
    const { flags, positionals } = parseCommandArgs(args, { ...connectionOptions, ...helpOption }, { command: "chat", maxPositionals: 1 });
    if (flags.help === true) {
      io.out(HELP);
      return ExitCode.ok;
    }
    const roomId = positionals[0];
    if (roomId === undefined) throw new UsageError("missing <roomId>", "chat");
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(roomId)) throw new UsageError(`not a room id: ${roomId}`, "chat");
    const settings = await resolveConnectionSettings(flags, io);
    if (settings.identityPath === undefined) throw new CliError("no identity to chat as: pass --identity PATH or set UNIBUS_IDENTITY");
    const identity = await loadIdentityForCli(settings.identityPath);
    const client = await connectClientAs(settings, identity, "unibus-cli chat");
    let auto: AutoRekey | undefined;
    let room: Room | undefined;
    try {
      const ready = await prepareRoomKeys(client, identity, roomId).catch((err: unknown) => {
        throw err instanceof Error && err.message.startsWith("not a member") ? new CliError(err.message) : requestError(err, "keys");
      });
      if (ready.registered) io.err("registered your agreement key with the keys service");
      if (ready.rekeyedTo !== undefined) io.err(`the room had no key yet and you own it: started epoch ${ready.rekeyedTo}`);
      if (ready.role === "owner") {
        auto = autoRekey(client, identity.signingKey, roomId, {
          onRekey: (o) => io.err(o instanceof Error ? `rekey failed: ${o.message}` : `membership changed: room rekeyed to epoch ${o.epoch}`),
        });
      }
      const open = client.room(roomId, ready.keyring);
      room = open;
      const printing = printMessages(open, io, senderNames(client));
      void printRejects(open, io);
      await client.nc.flush();
      io.err(`joined ${roomId} as ${client.principal.slice(0, 8)}… (${ready.role}); type /quit to leave`);
      const input = io.lines?.() ?? [];
      for await (const line of input) {
        if (line.trim() === "/quit") break;
        if (line.length === 0) continue;
        await open.publish(line).catch((err: unknown) => io.err(style("31", `not sent: ${(err as Error).message}`)));
      }
      // Give our own last messages a moment to come back before closing.
      await client.nc.flush();
      await new Promise((r) => setTimeout(r, 200));
      await open.close();
      await printing;
      return ExitCode.ok;
    } catch (err) {
      if (err instanceof CliError) throw err;
      throw requestError(err, "rooms");
    } finally {
      auto?.stop();
      await room?.close().catch(() => undefined);
      await client.close().catch(() => undefined);
    }
  },
};
