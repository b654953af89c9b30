import { createInbox } from "@nats-io/transport-node";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { defineCounter } from "@unibus/kit";

/** Connections closed (or failed to close) so they reconnect with new permissions. */
const kicks = defineCounter("unibus_kicks_total", "Connections kicked to apply changed permissions, by result", ["result"] as const);

function countKicks(outcome: KickOutcome): void {
  if (outcome.kicked > 0) kicks.inc({ result: "kicked" }, outcome.kicked);
  if (outcome.failed > 0) kicks.inc({ result: "failed" }, outcome.failed);
}

/** Outcome of one kick: how many live connections were found, closed, and how many steps failed. */
export interface KickOutcome {
  /** Live connections of the principal found on all servers. */
  connections: number;
  /** Connections the servers confirmed closed. */
  kicked: number;
  /** Failed server lookups or kicks (each is logged). */
  failed: number;
  /** Set when the kick was scheduled for after the reply (see {@link ConnectionKicker.kickLater}). */
  deferred?: boolean;
}

/** Closes a principal's live connections so they reconnect through the auth callout. */
export interface ConnectionKicker {
  /**
   * Kicks every live connection of `principal` on every server. Never throws:
   * the membership change it follows is already durable, so a failure is
   * logged and reported in the outcome instead.
   */
  kick(principal: string): Promise<KickOutcome>;
  /**
   * Kicks after `delayMs`, for a change to the caller's own permissions: the
   * reply travels on the connection being kicked and must get there first.
   * The outcome is logged.
   */
  kickLater(principal: string, delayMs: number): KickOutcome;
  /** Cancels pending deferred kicks and follow-up sweeps. */
  close(): void;
}

/**
 * A kicker that closes nothing: for a membership service run where live
 * connections do not matter (tests that read state, not sessions). In
 * production every change must kick, so `main.ts` always uses
 * {@link SystemConnectionKicker}.
 */
export const noKicks: ConnectionKicker = {
  kick: async () => ({ connections: 0, kicked: 0, failed: 0 }),
  kickLater: () => ({ connections: 0, kicked: 0, failed: 0, deferred: true }),
  close: () => undefined,
};

/** System-account subjects for connection introspection and kicks (nats-server ≥ 2.10). */
export const SystemSubject = {
  /** Every server answers with its connz. */
  connzAll: "$SYS.REQ.SERVER.PING.CONNZ",
  connz: (serverId: string) => `$SYS.REQ.SERVER.${serverId}.CONNZ`,
  kick: (serverId: string) => `$SYS.REQ.SERVER.${serverId}.KICK`,
} as const;

/** Options of {@link SystemConnectionKicker}. */
export interface SystemConnectionKickerOptions {
  logger: Logger;
  /** Longest wait for all servers' connz replies. Default 1000 ms. */
  gatherMs?: number;
  /**
   * Stop gathering once no server answered for this long: the bound of a
   * lookup that has not heard from every server known to exist. Default 150 ms.
   */
  stallMs?: number;
  /**
   * How many servers exist, fixed (tests). Default: learned, the servers that
   * answered the last full lookup; unknown before the first one.
   */
  expectedServers?: number;
  /**
   * Delay of a second sweep, or 0 for none. Default 2500 ms: a connection
   * whose callout read the store just before the change may register only
   * after the first sweep; the server's callout timeout (2 s) bounds that.
   */
  resweepMs?: number;
  /** Clock, unix ms. */
  now?: () => number;
}

interface ConnzConnection {
  cid: number;
  start?: string;
  authorized_user?: string;
}

interface ConnzReply {
  server?: { id?: string; name?: string };
  data?: { total?: number; offset?: number; connections?: ConnzConnection[] | null };
  error?: { code?: number; description?: string };
}

const CONNZ_PAGE = 1024;
const REQUEST_TIMEOUT_MS = 1_000;

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * A {@link ConnectionKicker} over a system-account connection.
 *
 * Finds connections with `$SYS.REQ.SERVER.PING.CONNZ {"user": principal}`:
 * verified on nats-server 2.10.27, a callout-authorized client's connz
 * `authorized_user` is the `name` of the user JWT the callout issued (the
 * callout sets it to the principal), not the connect nkey. Each connection is
 * kicked on its own server with `$SYS.REQ.SERVER.<id>.KICK {"cid": N}` as soon
 * as that server's connz arrives, so closing does not wait for slow servers.
 */
export class SystemConnectionKicker implements ConnectionKicker {
  readonly #sys: NatsConnection;
  readonly #logger: Logger;
  readonly #gatherMs: number;
  readonly #stallMs: number;
  readonly #resweepMs: number;
  readonly #now: () => number;
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #fixedServers: number | undefined;
  /** Server ids that answered the last full lookup: the servers known to exist. */
  #knownServers = new Set<string>();

  constructor(sys: NatsConnection, opts: SystemConnectionKickerOptions) {
    this.#sys = sys;
    this.#logger = opts.logger.child({ op: "kick" });
    this.#gatherMs = opts.gatherMs ?? 1_000;
    this.#stallMs = opts.stallMs ?? 150;
    this.#resweepMs = opts.resweepMs ?? 2_500;
    this.#now = opts.now ?? Date.now;
    this.#fixedServers = opts.expectedServers;
  }

  async kick(principal: string, changedAt: number = this.#now()): Promise<KickOutcome> {
    const kickedCids = new Set<string>();
    // Only connections accepted before the change can hold stale
    // permissions: a later one was authorized (per login, from the store)
    // after the change was durable. Kicking those too made rapid changes for
    // one principal kick its reconnects mid-handshake, which stalls nats.js
    // clients for their whole connect timeout. A connection with no start
    // time is kicked: when in doubt, fail closed.
    const stale = (c: ConnzConnection): boolean => c.start === undefined || !(Date.parse(c.start) > changedAt);
    const outcome = await this.#sweep(principal, stale, kickedCids, true);
    countKicks(outcome);
    if (this.#resweepMs > 0) {
      // The follow-up waits out the stall: a server that joined since the
      // last full lookup is found here, and becomes known.
      this.#schedule(this.#resweepMs, async () => {
        const late = await this.#sweep(principal, stale, kickedCids, false);
        countKicks(late);
        if (late.kicked > 0 || late.failed > 0) this.#logger.warn({ principal, ...late }, "follow-up sweep kicked late connections");
      });
    }
    return outcome;
  }

  kickLater(principal: string, delayMs: number): KickOutcome {
    // The change happened now; the delay only lets the caller's reply out first.
    const changedAt = this.#now();
    this.#schedule(delayMs, () => this.kick(principal, changedAt));
    return { connections: 0, kicked: 0, failed: 0, deferred: true };
  }

  #schedule(delayMs: number, run: () => Promise<unknown>): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      void run();
    }, delayMs);
    timer.unref();
    this.#timers.add(timer);
  }

  close(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }

  /**
   * Sends `data` to `subject` and yields the replies as they arrive. Ends
   * once `complete()` says so after a reply, when no reply came for the
   * stall time, or at the gather time.
   */
  async *#gather(subject: string, data: string, complete: () => boolean): AsyncGenerator<Msg> {
    const queue: Msg[] = [];
    let wake: (() => void) | undefined;
    const sub = this.#sys.subscribe(createInbox(), {
      callback: (err, msg) => {
        if (err === null) queue.push(msg);
        wake?.();
      },
    });
    try {
      this.#sys.publish(subject, data, { reply: sub.getSubject() });
      const deadline = performance.now() + this.#gatherMs;
      for (;;) {
        const msg = queue.shift();
        if (msg !== undefined) {
          yield msg;
          if (complete()) return;
          continue;
        }
        const wait = Math.min(this.#stallMs, deadline - performance.now());
        if (wait <= 0) return;
        const arrived = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), wait);
          wake = () => {
            clearTimeout(timer);
            resolve(true);
          };
        });
        wake = undefined;
        if (!arrived && queue.length === 0) return;
      }
    } finally {
      sub.unsubscribe();
    }
  }

  /**
   * True once every server known to exist is among `answered`: by id, so a
   * newly joined server answering first cannot stand in for a known one.
   * Nothing known yet: never (the stall decides).
   */
  #heardFromAll(answered: ReadonlySet<string>): boolean {
    if (this.#fixedServers !== undefined) return answered.size >= this.#fixedServers;
    if (this.#knownServers.size === 0) return false;
    for (const id of this.#knownServers) if (!answered.has(id)) return false;
    return true;
  }

  /**
   * One lookup-and-kick round. `fast`: stop as soon as every server known to
   * exist answered, instead of waiting out the stall after the last reply
   * (150 ms on every kick, most of a single invite's latency).
   */
  async #sweep(principal: string, eligible: (c: ConnzConnection) => boolean, kickedCids: Set<string>, fast: boolean): Promise<KickOutcome> {
    const outcome: KickOutcome = { connections: 0, kicked: 0, failed: 0 };
    const kicks: Promise<void>[] = [];
    const onServer = (serverId: string, connections: ConnzConnection[]): void => {
      for (const c of connections) {
        // The filter is the server's (`authorized_user` is only listed with
        // `auth: true`); checking again keeps a server that
        // ignored it from making us kick someone else.
        if (c.authorized_user !== principal || !eligible(c)) continue;
        const id = `${serverId}/${c.cid}`;
        if (kickedCids.has(id)) continue;
        kickedCids.add(id);
        outcome.connections++;
        kicks.push(
          this.#kickOne(serverId, c.cid).then((ok) => {
            if (ok) outcome.kicked++;
            else outcome.failed++;
          }),
        );
      }
    };
    let servers = 0;
    const answered = new Set<string>();
    try {
      const replies = this.#gather(SystemSubject.connzAll, JSON.stringify({ user: principal, auth: true, limit: CONNZ_PAGE }), () => fast && this.#heardFromAll(answered));
      for await (const msg of replies) {
        servers++;
        const reply = msg.json<ConnzReply>();
        const serverId = reply.server?.id;
        if (serverId !== undefined) answered.add(serverId);
        if (serverId === undefined || reply.error !== undefined || reply.data === undefined) {
          outcome.failed++;
          this.#logger.error({ principal, server: serverId, err: reply.error?.description ?? "malformed connz reply" }, "connz failed");
          continue;
        }
        onServer(serverId, reply.data.connections ?? []);
        const total = reply.data.total ?? 0;
        for (let offset = CONNZ_PAGE; offset < total; offset += CONNZ_PAGE) {
          const page = await this.#sys.request(SystemSubject.connz(serverId), JSON.stringify({ user: principal, auth: true, limit: CONNZ_PAGE, offset }), { timeout: REQUEST_TIMEOUT_MS });
          onServer(serverId, page.json<ConnzReply>().data?.connections ?? []);
        }
      }
    } catch (err) {
      outcome.failed++;
      this.#logger.error({ principal, err: errMessage(err) }, "connz lookup failed");
    }
    // A full lookup defines the servers that exist (one that left drops
    // out); a fast one can only add to them.
    if (!fast || this.#knownServers.size === 0) this.#knownServers = answered;
    else for (const id of answered) this.#knownServers.add(id);
    if (servers === 0) {
      // No server answered: nothing proves the principal has no live
      // connection, so this counts as a failure, never as "nothing to do".
      outcome.failed++;
      this.#logger.error({ principal }, "no server answered connz");
    }
    await Promise.all(kicks);
    if (outcome.failed > 0) this.#logger.error({ principal, ...outcome }, "kick incomplete");
    else if (outcome.connections > 0) this.#logger.info({ principal, ...outcome }, "connections kicked");
    return outcome;
  }

  async #kickOne(serverId: string, cid: number): Promise<boolean> {
    try {
      const msg = await this.#sys.request(SystemSubject.kick(serverId), JSON.stringify({ cid }), { timeout: REQUEST_TIMEOUT_MS });
      const reply = msg.json<ConnzReply>();
      if (reply.error === undefined) return true;
      // The connection closed by itself between connz and kick: its goal is
      // met. 2.10.27 answers that case with 500 and this description.
      if (reply.error.description?.startsWith("no such client") === true) return true;
      this.#logger.error({ server: serverId, cid, err: reply.error.description }, "kick refused");
      return false;
    } catch (err) {
      this.#logger.error({ server: serverId, cid, err: errMessage(err) }, "kick request failed");
      return false;
    }
  }
}
