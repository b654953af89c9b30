import { execFile } from "node:child_process";
import { performance } from "node:perf_hooks";
import { prepareRoomKeys } from "@unibus/sdk";
import type { RoomMessage, UnibusClient } from "@unibus/sdk";
import type { Identity } from "@unibus/crypto";
import { helpOption, parseCommandArgs, stringFlag } from "../args.js";
import type { Command } from "../command.js";
import { connectClientAs, connectionHelp, connectionOptions, requestError, resolveConnectionSettings, serverUrls } from "../connection.js";
import type { ConnectionSettings } from "../connection.js";
import { CliError, ExitCode, UsageError } from "../errors.js";
import { loadIdentityForCli } from "../identity-file.js";

const HELP = [
  "Usage: unibus check [--room-count N] [--messages N] [--timeout MS] [--cluster [--chaos]] [--json]",
  "",
  "Live end-to-end check of a running bus, as your identity (the admin of",
  "`unibus up` by default): creates a temporary encrypted room, registers your",
  "agreement key if needed, rekeys, publishes N messages and receives them",
  "decrypted on a second subscription, then leaves the room. Reports latency",
  "(p50/p99) and loss; exits 1 on any loss, rejected frame, timeout or",
  "refused request.",
  "",
  "With --cluster the same check runs through every seed URL of --server",
  "(comma-separated), one node at a time, so a node that cannot serve a",
  "room fails the check. --chaos (test environments only) then streams",
  "messages through a persisted room while one node is stopped mid-stream:",
  "the receiver on that node fails over to another seed, what it missed is",
  "read from the room's history and frames the stream never stored are sent",
  "again; it prints sent/received/duplicates/failover time and fails on any",
  "loss. The node is stopped by the shell command in UNIBUS_CHAOS_STOP, run",
  "with UNIBUS_CHAOS_URL set to the node's URL (e.g. `docker stop` or `kill`);",
  "UNIBUS_CHAOS_SPARE lists seeds never to stop (comma-separated).",
  "",
  "Options:",
  "  --room-count N        temporary rooms, checked one after another (default 1)",
  "  --messages N          messages per room (default 100)",
  "  --timeout MS          per-room wait for the last message (default 10000)",
  "  --cluster             check through every seed URL (at least two)",
  "  --chaos               with --cluster: stop one node mid-stream (needs UNIBUS_CHAOS_STOP)",
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

/** Outcome of the `--chaos` failover stream, as `--json` prints it under `failover`. */
export interface FailoverCheck {
  roomId: string;
  /** The node stopped mid-stream: the one the receiver was on. */
  stoppedUrl: string;
  sent: number;
  /** Distinct messages the receiver ended with (live, from history, or sent again). */
  received: number;
  /** Live deliveries of a message already received. */
  duplicates: number;
  /** Missed live while failing over, read from the room's history. */
  fromHistory: number;
  /** Never stored by the stream (sent while it had no leader), so sent again. */
  resent: number;
  lost: number;
  /** From the stop command's start to the receiver's reconnect to another seed. */
  failoverMs: number | undefined;
  error?: string;
}

/** Environment of `--chaos`: the command that stops a node, and the URL it is given. */
export const ChaosEnv = { stop: "UNIBUS_CHAOS_STOP", url: "UNIBUS_CHAOS_URL", spare: "UNIBUS_CHAOS_SPARE" } as const;

function runStopCommand(command: string, url: string, env: Readonly<Record<string, string | undefined>>): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile("/bin/sh", ["-c", command], { env: { ...env, [ChaosEnv.url]: url }, timeout: 30_000 }, (err, _out, stderr) =>
      err ? reject(new CliError(`${ChaosEnv.stop} failed for ${url}: ${stderr.trim() || err.message}`)) : resolve(),
    );
  });
}

/** `host:port` of a server URL (nats.js names the current server so). */
function hostPortOf(u: string): string {
  const url = new URL(u.includes("://") ? u : `nats://${u}`);
  return `${url.hostname}:${url.port || "4222"}`;
}

/** The seed URL a connection's `host:port` belongs to. */
function seedOf(urls: readonly string[], hostPort: string): string | undefined {
  return urls.find((u) => hostPortOf(u) === hostPort);
}

/**
 * The `--chaos` stream: a receiver on one node, a sender on the others, a
 * persisted room, and the receiver's node stopped half-way. Room frames are
 * core publishes with no acks (an ack could be aimed at a subject the
 * publisher may not use), so zero loss comes from the stream: the receiver
 * reads what it missed from history, and the sender sends again what the
 * stream never stored (a leader election drops frames). Message ids make
 * the second copy harmless: it counts as a duplicate, never as a second message.
 */
async function checkFailover(settings: ConnectionSettings, identity: Identity, urls: readonly string[], messages: number, timeoutMs: number, stopCommand: string, env: Readonly<Record<string, string | undefined>>): Promise<FailoverCheck> {
  // The receiver must sit on a node that may be stopped: UNIBUS_CHAOS_SPARE
  // names nodes to leave alone (e.g. the one the services under test use).
  const spare = new Set(serverUrls(env[ChaosEnv.spare] ?? ",").flatMap((u) => seedOf(urls, hostPortOf(u)) ?? []));
  const stoppable = urls.filter((u) => !spare.has(u));
  if (stoppable.length === 0) throw new CliError(`${ChaosEnv.spare} spares every seed: nothing to stop`);
  let receiver: UnibusClient | undefined;
  let stoppedUrl: string | undefined;
  // nats.js shuffles the seed list, so an attempt lands on a given one of
  // three nodes only about a third of the time: 10 attempts missed it in
  // about 2% of CI runs, 40 miss it about once in ten million.
  for (let attempt = 0; attempt < 40 && stoppedUrl === undefined; attempt++) {
    // Seeds in a rotated order, so a client that takes the first seed still lands on each candidate in turn.
    const first = stoppable[attempt % stoppable.length]!;
    const c = await connectClientAs({ ...settings, server: [first, ...urls.filter((u) => u !== first)].join(",") }, identity, "unibus-cli check receiver");
    const on = seedOf(urls, c.nc.getServer());
    if (on !== undefined && !spare.has(on)) {
      receiver = c;
      stoppedUrl = on;
    } else await c.close();
  }
  if (receiver === undefined || stoppedUrl === undefined) throw new CliError(`the receiver never landed on a node it may stop (${stoppable.join(", ")})`);
  const clients: UnibusClient[] = [receiver];
  const rooms: { close(): Promise<void> }[] = [];
  let roomId: string | undefined;
  // Named in a failure, so the operator knows which step the bus did not serve.
  let phase = "room set-up";
  try {
    const { room } = await receiver.rooms.create(`check-chaos-${Date.now().toString(36)}`, { persist: true, encrypt: true });
    roomId = room.id;
    const ready = await prepareRoomKeys(receiver, identity, room.id);
    // Connected after the create, so its login already carries the room grant.
    const sender = await connectClientAs({ ...settings, server: urls.filter((u) => u !== stoppedUrl).join(",") }, identity, "unibus-cli check sender");
    clients.push(sender);
    const senderKeys = await prepareRoomKeys(sender, identity, room.id);
    const result: FailoverCheck = { roomId: room.id, stoppedUrl, sent: 0, received: 0, duplicates: 0, fromHistory: 0, resent: 0, lost: messages, failoverMs: undefined };
    const rx = receiver.room(room.id, ready.keyring);
    const tx = sender.room(room.id, senderKeys.keyring);
    rooms.push(rx, tx);
    const tag = `${room.id}:${Math.random().toString(36).slice(2)}`;
    const seen = new Set<number>();
    let allSeen: () => void = () => undefined;
    const complete = new Promise<void>((r) => (allSeen = r));
    const take = (body: { tag?: string; seq?: number }, live: boolean): boolean => {
      if (body.tag !== tag || typeof body.seq !== "number") return false;
      if (seen.has(body.seq)) {
        if (live) result.duplicates++;
        return false;
      }
      seen.add(body.seq);
      if (seen.size === messages) allSeen();
      return true;
    };
    const sub = rx.subscribe();
    void (async () => {
      for await (const m of sub as AsyncIterable<RoomMessage>) take(m.json(), true);
    })();
    await receiver.nc.flush();

    let stopStarted = 0;
    let reconnected: () => void = () => undefined;
    const failedOver = new Promise<void>((r) => (reconnected = r));
    void (async () => {
      for await (const st of receiver.status()) {
        if (st.type === "reconnect" && stopStarted > 0) {
          result.failoverMs = performance.now() - stopStarted;
          reconnected();
          return;
        }
      }
    })();

    phase = "streaming";
    let stopping: Promise<void> | undefined;
    const handedOver: Promise<unknown>[] = [];
    for (let seq = 0; seq < messages; seq++) {
      if (seq === Math.floor(messages / 2)) {
        stopStarted = performance.now();
        stopping = runStopCommand(stopCommand, stoppedUrl, env);
      }
      // Not awaited one by one: a frame whose room lookup times out while the
      // services fail over would hold up every later one for the whole
      // timeout. A refused frame is not in the stream; the resend covers it.
      handedOver.push(tx.publish({ tag, seq }).catch(() => undefined));
      result.sent++;
      // A steady stream that spans the stop, not one burst before it.
      if (seq % 16 === 15) await new Promise((r) => setTimeout(r, 5));
    }
    await stopping;
    await Promise.all(handedOver);
    let deadline = performance.now() + timeoutMs;
    const until = async (p: Promise<void>): Promise<void> => {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([p, new Promise((r) => (timer = setTimeout(r, Math.max(0, deadline - performance.now()))))]).finally(() => clearTimeout(timer));
    };
    phase = "failover";
    await until(failedOver);
    if (result.failoverMs === undefined) throw new CliError(`the receiver did not fail over from ${stoppedUrl} within ${timeoutMs} ms`);

    // The receiver's key of the epoch may have been looked up while the keys
    // service was failing over too: a failed lookup is remembered briefly and
    // every frame of the epoch is rejected meanwhile (fail closed). Ask until
    // the key is held, so the history read and the resends are not rejected.
    phase = "room key";
    for (;;) {
      try {
        await ready.keyring.current(room.id);
        break;
      } catch (err) {
        if (performance.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }

    // What the receiver missed while failing over is in the room's stream.
    // A history read during a leader election is refused: read again.
    phase = "history read";
    const stored = new Set<number>();
    for (;;) {
      const history = receiver.room(room.id, ready.keyring);
      try {
        for await (const m of history.history()) {
          const body = m.json<{ tag?: string; seq?: number }>();
          if (body.tag !== tag || typeof body.seq !== "number") continue;
          stored.add(body.seq);
          if (take(body, false)) result.fromHistory++;
        }
        break;
      } catch (err) {
        if (performance.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 250));
      } finally {
        await history.close();
      }
    }
    // At least once: what the stream never stored is sent again, within a
    // timeout of its own (the services may still be failing over).
    deadline = performance.now() + timeoutMs;
    phase = "resend";
    for (let seq = 0; seq < messages; seq++) {
      if (stored.has(seq) || seen.has(seq)) continue;
      for (;;) {
        try {
          await tx.publish({ tag, seq });
          break;
        } catch (err) {
          if (performance.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      result.resent++;
    }
    await until(complete);
    result.received = seen.size;
    result.lost = messages - seen.size;
    sub.stop();
    return result;
  } catch (err) {
    throw new CliError(`${phase}: ${err instanceof CliError ? err.message : requestError(err, "bus").message}`, { cause: err });
  } finally {
    await Promise.allSettled(rooms.map((r) => r.close()));
    if (roomId !== undefined) await receiver.rooms.leave(roomId).catch(() => undefined);
    await Promise.allSettled(clients.map((c) => c.close()));
  }
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
      { ...connectionOptions, ...helpOption, json: { type: "boolean" }, cluster: { type: "boolean" }, chaos: { type: "boolean" }, "room-count": { type: "string" }, messages: { type: "string" }, timeout: { type: "string" } },
      { command: "check", maxPositionals: 0 },
    );
    if (flags.help === true) {
      io.out(HELP);
      return ExitCode.ok;
    }
    const roomCount = positiveInt(flags, "room-count", 1);
    const messages = positiveInt(flags, "messages", 100);
    const timeoutMs = positiveInt(flags, "timeout", 10_000);
    const cluster = flags.cluster === true;
    const chaos = flags.chaos === true;
    if (chaos && !cluster) throw new UsageError("--chaos needs --cluster", "check");
    const stopCommand = io.env[ChaosEnv.stop];
    // Stopping a node is for test environments only: nothing happens unless the operator named the command.
    if (chaos && (stopCommand === undefined || stopCommand.trim() === "")) {
      throw new UsageError(`--chaos stops a node: set ${ChaosEnv.stop} to the shell command that stops the node at $${ChaosEnv.url} (test environments only)`, "check");
    }
    const settings = await resolveConnectionSettings(flags, io);
    if (settings.identityPath === undefined) throw new CliError("no identity to check as: pass --identity PATH or set UNIBUS_IDENTITY (or start the local bus with `npx unibus up`)");
    const urls = serverUrls(settings.server);
    if (cluster && urls.length < 2) throw new UsageError(`--cluster checks every seed: give at least two in --server (comma-separated), got ${settings.server}`, "check");
    const identity = await loadIdentityForCli(settings.identityPath);
    // One pass per seed with --cluster (the client pinned to that node); one pass over all seeds otherwise.
    const passes = cluster ? urls.map((u) => ({ seed: u, server: u })) : [{ seed: undefined, server: settings.server }];
    const results: (RoomCheck & { seed?: string })[] = [];
    let failover: FailoverCheck | undefined;
    const started = performance.now();
    let failure: string | undefined;
    for (const pass of passes) {
      if (failure !== undefined) break;
      let client: UnibusClient;
      try {
        client = await connectClientAs({ ...settings, server: pass.server }, identity, "unibus-cli check");
      } catch (err) {
        // Without --cluster a refused connect is the command's error, as it always was.
        if (pass.seed === undefined) throw err;
        failure = `seed ${pass.seed}: ${(err as Error).message}`;
        break;
      }
      const created: string[] = [];
      try {
        for (let i = 0; i < roomCount && failure === undefined; i++) {
          try {
            const r = await checkOneRoom(client, identity, messages, timeoutMs, created);
            results.push({ ...r, ...(pass.seed === undefined ? {} : { seed: pass.seed }) });
            if (r.lost > 0 || r.rejects > 0) failure = `${pass.seed === undefined ? "" : `seed ${pass.seed}: `}room ${r.roomId}: ${r.lost} of ${r.sent} messages lost, ${r.rejects} rejected`;
          } catch (err) {
            failure = `${pass.seed === undefined ? "" : `seed ${pass.seed}: `}${err instanceof CliError ? err.message : requestError(err, "bus").message}`;
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
    }
    if (chaos && failure === undefined) {
      try {
        failover = await checkFailover(settings, identity, urls, messages, timeoutMs, stopCommand!, io.env);
        if (failover.lost > 0) failure = `failover: ${failover.lost} of ${failover.sent} messages lost`;
      } catch (err) {
        failure = `failover: ${err instanceof CliError ? err.message : requestError(err, "bus").message}`;
      }
    }
    const ok = failure === undefined;
    if (flags.json === true) {
      io.out(JSON.stringify({ ok, ...(ok ? {} : { error: failure }), messages, rooms: results, ...(failover === undefined ? {} : { failover }), seconds: (performance.now() - started) / 1000 }, null, 2));
    } else {
      for (const r of results) {
        io.out(`${r.seed === undefined ? "" : `seed ${r.seed}: `}room ${r.roomId} (epoch ${r.epoch}): ${r.received}/${r.sent} delivered decrypted, lost ${r.lost}, rejected ${r.rejects}, latency p50 ${ms(r.p50Ms)} p99 ${ms(r.p99Ms)}`);
      }
      if (failover !== undefined) {
        const f = failover;
        io.out(`failover (stopped ${f.stoppedUrl}): sent ${f.sent}, received ${f.received}, duplicates ${f.duplicates}, from history ${f.fromHistory}, sent again ${f.resent}, lost ${f.lost}, failover ${ms(f.failoverMs)}`);
      }
      io.out(ok ? `check ok (${((performance.now() - started) / 1000).toFixed(1)} s)` : `check FAILED: ${failure}`);
    }
    if (!ok && flags.json !== true) io.err(`unibus: check failed: ${failure}`);
    return ok ? ExitCode.ok : ExitCode.failure;
  },
};
