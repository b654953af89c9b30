import { RejectReason, autoRekey, waitForRoomKey } from "@unibus/sdk";
import type { AutoRekey, Room, RoomEpochKey, RoomMessage, UnibusClient } from "@unibus/sdk";
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
  "messages print as `[HH:MM:SS] <handle>: text` on stdout, rejected frames",
  "and status on stderr. `/quit` (or the end of input) exits.",
  "",
  "Registers your agreement key if the keys service does not have it. As an",
  "owner of a room with no key yet, starts its first epoch, and keeps",
  "rekeying the room on every membership change while the chat runs, and",
  "whenever a member who joined later is waiting for a key. Without a key",
  "yet (e.g. just invited), it says it is waiting for one from an online",
  "owner; lines typed meanwhile are sent once the key arrives.",
  "",
  "Options:",
  "  -h, --help            show this help",
  "",
  connectionHelp,
].join("\n");

/** Lines kept while waiting for a room key; more are refused, not buffered without bound. */
const MAX_QUEUED_LINES = 100;

/** ANSI styling only on a terminal, so piped output stays plain. */
function style(code: string, text: string): string {
  return process.stderr.isTTY === true ? `\u001b[${code}m${text}\u001b[0m` : text;
}

/** How often an unknown sender may trigger a re-read of the room's handles (a member who joined since). */
const HANDLES_REFRESH_MS = 1_000;

/**
 * Names senders by the handles of the room's members (members may read those,
 * `rooms.get` with handles). Handles are not unique, so a handle two members
 * share is shown with a short principal: one member cannot pass as another.
 */
function senderNames(client: UnibusClient, roomId: string): (principal: string) => Promise<string> {
  const short = (p: string): string => `${p.slice(0, 8)}…`;
  let loadedAt = 0;
  let names: Promise<Map<string, string>> | undefined;
  const load = (): Promise<Map<string, string>> => {
    loadedAt = performance.now();
    return client.rooms.get(roomId, { withHandles: true }).then(
      ({ members }) => {
        const count = new Map<string, number>();
        for (const m of members) if (m.handle !== undefined) count.set(m.handle, (count.get(m.handle) ?? 0) + 1);
        return new Map(members.flatMap((m) => (m.handle === undefined ? [] : [[m.principal, count.get(m.handle) === 1 ? m.handle : `${m.handle} (${short(m.principal)})`] as const])));
      },
      () => new Map<string, string>(),
    );
  };
  return async (principal) => {
    names ??= load();
    let name = (await names).get(principal);
    if (name === undefined && performance.now() - loadedAt > HANDLES_REFRESH_MS) {
      names = load();
      name = (await names).get(principal);
    }
    return name ?? short(principal);
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

/** What the user is told while no room key is held. */
export const WAITING_FOR_KEY = "waiting for a room key from an online member";

async function printRejects(room: Room, io: CliIo, name: (p: string) => Promise<string>, held: () => RoomEpochKey | undefined): Promise<void> {
  for await (const r of room.rejects()) {
    const from = r.sender === undefined ? "" : ` from ${await name(r.sender)}`;
    const key = held();
    if (r.reason === RejectReason.unknownEpoch && r.epoch !== undefined) {
      // Not an attack, just a message this member holds no key for: say why.
      const why = key === undefined ? WAITING_FOR_KEY : r.epoch < key.epoch ? "sent before you got the room key" : "key not available yet";
      io.err(style("33", `[${clockTime()}] !! unreadable message${from} (epoch ${r.epoch}): ${why}`));
      continue;
    }
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
    let stopWaiting: (() => void) | undefined;
    try {
      const ready = await prepareRoomKeys(client, identity, roomId, io).catch((err: unknown) => {
        throw err instanceof Error && err.message.startsWith("not a member") ? new CliError(err.message) : requestError(err, "keys");
      });
      if (ready.registered) io.err("registered your agreement key with the keys service");
      if (ready.rekeyedTo !== undefined) io.err(`the room had no key yet and you own it: started epoch ${ready.rekeyedTo}`);
      if (ready.role === "owner") {
        auto = autoRekey(client, identity.signingKey, roomId, {
          checkOnStart: true,
          onRekey: (o) => io.err(o instanceof Error ? `rekey failed: ${o.message}` : `room rekeyed to epoch ${o.epoch}${o.withoutShare.length === 0 ? "" : ` (${o.withoutShare.length} member(s) without an agreement key yet)`}`),
        });
      }
      const open = client.room(roomId, ready.keyring);
      room = open;
      const names = senderNames(client, roomId);
      const printing = printMessages(open, io, names);
      let key: RoomEpochKey | undefined;
      const waiting = new AbortController();
      stopWaiting = () => waiting.abort();
      let waited = false;
      const keyReady = waitForRoomKey(client, ready.keyring, roomId, {
        signal: waiting.signal,
        onWaiting: () => {
          waited = true;
          io.err(WAITING_FOR_KEY);
        },
      }).then(
        (k) => {
          key = k;
          if (waited) io.err(`got the room key (epoch ${k.epoch}); you can talk now`);
          return true;
        },
        (err: unknown) => {
          if (!waiting.signal.aborted) io.err(style("31", `no room key: ${(err as Error).message}`));
          return false;
        },
      );
      void printRejects(open, io, names, () => key);
      await client.nc.flush();
      io.err(`joined ${roomId} as ${await names(client.principal)} (${ready.role}); type /quit to leave`);
      const send = (line: string): Promise<void> => open.publish(line).catch((err: unknown) => io.err(style("31", `not sent: ${(err as Error).message}`)));
      // Lines typed before the key arrives are kept (bounded) and sent once it
      // does, in order; one flusher at a time so later lines never overtake.
      const queued: string[] = [];
      let flushing: Promise<void> | undefined;
      const flush = (): Promise<void> => {
        flushing ??= (async () => {
          while (queued.length > 0) await send(queued.shift()!);
        })().finally(() => {
          flushing = undefined;
          if (queued.length > 0) void flush();
        });
        return flushing;
      };
      void keyReady.then((ok) => (ok ? flush() : undefined));
      let quit = false;
      const input = io.lines?.() ?? [];
      for await (const line of input) {
        if (line.trim() === "/quit") {
          quit = true;
          break;
        }
        if (line.length === 0) continue;
        if (key !== undefined && queued.length === 0 && flushing === undefined) {
          await send(line);
          continue;
        }
        if (queued.length >= MAX_QUEUED_LINES) {
          io.err(style("31", `not sent (${WAITING_FOR_KEY}; ${MAX_QUEUED_LINES} lines already queued)`));
          continue;
        }
        queued.push(line);
        if (key === undefined) io.err(`queued: ${WAITING_FOR_KEY}`);
        else void flush();
      }
      // At the end of piped input, queued lines still go out once the key arrives; /quit drops them.
      if (quit) queued.length = 0;
      else if (await keyReady) await flush();
      await flushing;
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
      stopWaiting?.();
      auto?.stop();
      await room?.close().catch(() => undefined);
      await client.close().catch(() => undefined);
    }
  },
};
