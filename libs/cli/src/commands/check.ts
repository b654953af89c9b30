import { performance } from "node:perf_hooks";
import { prepareRoomKeys } from "@unibus/sdk";
import type { RoomMessage, UnibusClient } from "@unibus/sdk";
import type { Identity } from "@unibus/crypto";
import { helpOption, parseCommandArgs, stringFlag } from "../args.js";
import type { Command } from "../command.js";
import { connectClientAs, connectionHelp, connectionOptions, requestError, resolveConnectionSettings } from "../connection.js";
import { CliError, ExitCode, UsageError } from "../errors.js";
import { loadIdentityForCli } from "../identity-file.js";

const HELP = [
  "Usage: unibus check [--room-count N] [--messages N] [--timeout MS] [--json]",
  "",
  "Live end-to-end check of a running bus, as your identity (the admin of",
  "`unibus up` by default): creates a temporary encrypted room, registers your",
  "agreement key if needed, rekeys, publishes N messages and receives them",
  "decrypted on a second subscription, then leaves the room. Reports latency",
  "(p50/p99) and loss; exits 1 on any loss, rejected frame, timeout or",
  "refused request.",
  "",
  "Options:",
  "  --room-count N        temporary rooms, checked one after another (default 1)",
  "  --messages N          messages per room (default 100)",
  "  --timeout MS          per-room wait for the last message (default 10000)",
  "  --json                print JSON",
  "  -h, --help            show this help",
  "",
  connectionHelp,
].join("\n");

/** One room's outcome. */
interface RoomCheck {
  roomId: string;
  epoch: number;
  sent: number;
  received: number;
  lost: number;
  rejects: number;
  p50Ms: number | undefined;
  p99Ms: number | undefined;
  error?: string;
}

function positiveInt(flags: Record<string, string | boolean | undefined>, name: string, fallback: number): number {
  const raw = stringFlag(flags, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 1_000_000) throw new UsageError(`--${name} must be a whole number from 1 to 1000000, got ${raw}`, "check");
  return n;
}

function percentile(sorted: readonly number[], p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function checkOneRoom(client: UnibusClient, identity: Identity, messages: number, timeoutMs: number, created: string[]): Promise<RoomCheck> {
  const { room } = await client.rooms.create(`check-${Date.now().toString(36)}`, { persist: false, encrypt: true });
  created.push(room.id);
  const ready = await prepareRoomKeys(client, identity, room.id);
  const result: RoomCheck = { roomId: room.id, epoch: ready.rekeyedTo ?? 0, sent: 0, received: 0, lost: messages, rejects: 0, p50Ms: undefined, p99Ms: undefined };
  // Two handles on one connection: only the receiver subscribes (the client's replay state sees each frame once).
  const sender = client.room(room.id, ready.keyring);
  const receiver = client.room(room.id, ready.keyring);
  const latencies: number[] = [];
  const seen = new Set<number>();
  try {
    void (async () => {
      for await (const _ of receiver.rejects()) result.rejects++;
    })();
    const sub = receiver.subscribe();
    await client.nc.flush();
    const sentAt: number[] = [];
    const tag = `${room.id}:${Math.random().toString(36).slice(2)}`;
    const all = new Promise<void>((resolve) => {
      void (async () => {
        for await (const m of sub as AsyncIterable<RoomMessage>) {
          const body = m.json<{ tag?: string; seq?: number }>();
          if (body.tag !== tag || typeof body.seq !== "number" || seen.has(body.seq)) continue;
          seen.add(body.seq);
          const t0 = sentAt[body.seq];
          if (t0 !== undefined) latencies.push(performance.now() - t0);
          if (seen.size === messages) return resolve();
        }
        resolve();
      })();
    });
    for (let seq = 0; seq < messages; seq++) {
      sentAt[seq] = performance.now();
      void sender.publish({ tag, seq });
      result.sent++;
      // Yield now and then so a large N is sent as frames, not one unbounded turn.
      if (seq % 64 === 63) await new Promise((r) => setImmediate(r));
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise((r) => (timer = setTimeout(r, timeoutMs)))]).finally(() => clearTimeout(timer));
    sub.stop();
  } finally {
    await Promise.allSettled([sender.close(), receiver.close()]);
  }
  latencies.sort((a, b) => a - b);
  result.received = seen.size;
  result.lost = messages - seen.size;
  result.p50Ms = percentile(latencies, 50);
  result.p99Ms = percentile(latencies, 99);
  return result;
}

const ms = (v: number | undefined): string => (v === undefined ? "-" : `${v.toFixed(2)} ms`);

/** `unibus check`: the operator's live end-to-end check (temporary room, N messages, latency and loss). */
export const checkCommand: Command = {
  name: "check",
  summary: "live end-to-end check: temporary room, N messages, latency and loss",
  help: HELP,
  async run(args, io) {
    const { flags } = parseCommandArgs(
      args,
      { ...connectionOptions, ...helpOption, json: { type: "boolean" }, "room-count": { type: "string" }, messages: { type: "string" }, timeout: { type: "string" } },
      { command: "check", maxPositionals: 0 },
    );
    if (flags.help === true) {
      io.out(HELP);
      return ExitCode.ok;
    }
    const roomCount = positiveInt(flags, "room-count", 1);
    const messages = positiveInt(flags, "messages", 100);
    const timeoutMs = positiveInt(flags, "timeout", 10_000);
    const settings = await resolveConnectionSettings(flags, io);
    if (settings.identityPath === undefined) throw new CliError("no identity to check as: pass --identity PATH or set UNIBUS_IDENTITY (or start the local bus with `npx unibus up`)");
    const identity = await loadIdentityForCli(settings.identityPath);
    const client = await connectClientAs(settings, identity, "unibus-cli check");
    const created: string[] = [];
    const results: RoomCheck[] = [];
    const started = performance.now();
    let failure: string | undefined;
    try {
      for (let i = 0; i < roomCount && failure === undefined; i++) {
        try {
          const r = await checkOneRoom(client, identity, messages, timeoutMs, created);
          results.push(r);
          if (r.lost > 0 || r.rejects > 0) failure = `room ${r.roomId}: ${r.lost} of ${r.sent} messages lost, ${r.rejects} rejected`;
        } catch (err) {
          failure = err instanceof CliError ? err.message : requestError(err, "bus").message;
        }
      }
    } finally {
      // Cleanup: the caller is the rooms' only member, so leaving empties them.
      for (const id of created) {
        await client.rooms.leave(id).catch((err: unknown) => {
          io.err(`cleanup: could not leave room ${id}: ${requestError(err, "membership").message}`);
        });
      }
      await client.close().catch(() => undefined);
    }
    const ok = failure === undefined;
    if (flags.json === true) {
      io.out(JSON.stringify({ ok, ...(ok ? {} : { error: failure }), messages, rooms: results, seconds: (performance.now() - started) / 1000 }, null, 2));
    } else {
      for (const r of results) {
        io.out(`room ${r.roomId} (epoch ${r.epoch}): ${r.received}/${r.sent} delivered decrypted, lost ${r.lost}, rejected ${r.rejects}, latency p50 ${ms(r.p50Ms)} p99 ${ms(r.p99Ms)}`);
      }
      io.out(ok ? `check ok (${((performance.now() - started) / 1000).toFixed(1)} s)` : `check FAILED: ${failure}`);
    }
    if (!ok && flags.json !== true) io.err(`unibus: check failed: ${failure}`);
    return ok ? ExitCode.ok : ExitCode.failure;
  },
};
