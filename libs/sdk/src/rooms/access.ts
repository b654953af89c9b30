/**
 * Waiting for a room grant to reach a live connection.
 *
 * The auth callout fixes a connection's permissions when it connects; a
 * membership change (create, invite) reaches a client only through the kick
 * and reconnect the membership service triggers (docs/design.md "Kicks"). A
 * room subscription made before that reconnect is refused by the server and
 * closed by nats.js, so callers wait here first.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { RoomSubject } from "./room.js";

/** Options of {@link waitForRoomAccess}. */
export interface RoomAccessOptions {
  /** Give up after this many ms. Default 10 000. */
  timeoutMs?: number;
}

/** The room grant did not reach the connection in time (not a member, or no kick/reconnect happened). */
export class RoomAccessTimeoutError extends Error {
  override readonly name = "RoomAccessTimeoutError";
  constructor(
    readonly roomId: string,
    readonly timeoutMs: number,
  ) {
    super(`no access to room ${roomId} within ${timeoutMs} ms: not a member, or the connection was not re-authorized yet`);
  }
}

const PROBE_INTERVAL_MS = 100;

/**
 * Resolves once `client`'s connection may subscribe to room `roomId`'s
 * message subject. It probes with a subscription and a flush: the server
 * answers a refused subscription with a permission error before the flush's
 * PONG, and nats.js closes that subscription. Nothing is published, so a
 * persisted room's stream is not touched.
 *
 * @throws RoomAccessTimeoutError when the grant does not arrive in time.
 */
export async function waitForRoomAccess(client: { readonly nc: NatsConnection }, roomId: string, opts: RoomAccessOptions = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  const subject = `${RoomSubject.prefix}${roomId}.${RoomSubject.messages}`;
  while (Date.now() < deadline) {
    const sub = client.nc.subscribe(subject);
    let closedBy: unknown = undefined;
    void sub.closed.then(
      (e) => (closedBy = e ?? "closed"),
      (e: unknown) => (closedBy = e ?? "closed"),
    );
    try {
      await client.nc.flush();
      // The closed promise settles on a later microtask than the error that closed it.
      await new Promise((r) => setImmediate(r));
      if (closedBy === undefined && !sub.isClosed()) return;
    } catch {
      // Disconnected mid-probe (the kick itself): try again after the reconnect.
    } finally {
      if (!sub.isClosed()) sub.unsubscribe();
    }
    await new Promise((r) => setTimeout(r, PROBE_INTERVAL_MS));
  }
  throw new RoomAccessTimeoutError(roomId, timeoutMs);
}
