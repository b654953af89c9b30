import { setTimeout as sleep } from "node:timers/promises";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { Msg, NatsConnection, Status } from "@nats-io/transport-node";
import { nkeyAuthenticator, signEnvelope, SigningKey } from "@unibus/crypto";
import type { Envelope, Identity } from "@unibus/crypto";
import { ErrorCode, ErrorReason, ReadOnlySubjects, ServiceErrorCodeHeader, ServiceErrorHeader, Subjects, UnibusError, decodeReply } from "@unibus/contracts";
import { AdminApi, RoomsApi, UsersApi } from "./membership.js";
import { KeysApi } from "./keys/api.js";
import { RoomLogs } from "./rooms/membership-log.js";
import type { RoomLogHeadStore, RoomLogsOptions } from "./rooms/membership-log.js";
import { UsersLogSync } from "./rooms/users-log.js";
import type { UsersLogPinStore, UsersLogSyncOptions } from "./rooms/users-log.js";
import type { RoomKeySource } from "./rooms/keyring.js";
import { ReplayGuard } from "./rooms/replay-guard.js";
import { createRoom } from "./rooms/room.js";
import { envelopeHeaders } from "./signed-request.js";
import type { Room } from "./rooms/room.js";
import { ReconnectBackoff } from "./reconnect-backoff.js";

/** Options of {@link connect}. Give `url` or `servers`. */
export interface ConnectOptions {
  /** One server URL, e.g. `nats://127.0.0.1:4222`. */
  url?: string;
  /** Several server URLs (a cluster); the client picks and fails over among them. */
  servers?: string[];
  /** The identity to connect and sign requests as: an identity file's contents, or a bare signing key. */
  identity: Identity | SigningKey;
  /** Connection name shown in the server's connz (debugging only; not trusted). */
  name?: string;
  /**
   * Default request timeout in ms. Default 5000. It bounds the whole call,
   * resends and the wait for a reconnect included; a request that times out
   * while the client is reconnecting rejects with a retryable 503
   * `connection_lost` (it may or may not have been applied).
   */
  requestTimeoutMs?: number;
  /**
   * Admins whose room-management entries the membership logs accept, pinned
   * here because the service's users list is not trusted for it. Default: none.
   */
  trustedAdmins?: readonly string[];
  /** Keeps each room's verified log head across processes, so a later rollback or fork is refused. */
  roomLogHeads?: RoomLogHeadStore;
  /**
   * TLS to the server: `caFile` is a PEM CA to trust (e.g. the one
   * `unibus up --tls` writes). Given, or with a `tls://` URL, the client
   * refuses a server that does not offer TLS instead of falling back to
   * plaintext.
   */
  tls?: { caFile?: string };
  /**
   * The users log's root: the bootstrap identity's principal or entry 0's
   * hash. Unset: the first verified entry 0 is trusted (and kept in
   * `usersLogPin`, if given). Admin actions in room logs are accepted when
   * this log (or `trustedAdmins`) says the actor was an admin.
   */
  trustedRoot?: string;
  /** Keeps the users log's root and verified head across processes. */
  usersLogPin?: UsersLogPinStore;
}

/** The nats.js `tls` option for `servers`: required for `tls://` URLs or when a CA is given. */
export function tlsOption(servers: readonly string[], tls: { caFile?: string } | undefined): { tls?: { caFile?: string } } {
  if (tls !== undefined) return { tls: tls.caFile === undefined ? {} : { caFile: tls.caFile } };
  return servers.some((u) => u.trim().toLowerCase().startsWith("tls://")) ? { tls: {} } : {};
}

/** Per-call options of {@link UnibusClient.request}. */
export interface RequestOptions {
  /** Timeout in ms; defaults to the client's `requestTimeoutMs`. */
  timeoutMs?: number;
}

/**
 * A connection to the bus as one principal: signed control-plane requests and
 * typed membership helpers. The underlying nats.js connection is exposed as
 * `nc` for room traffic.
 */
export interface UnibusClient {
  /** The principal (`U…`) this client connects and signs as. */
  readonly principal: string;
  /** The underlying NATS connection (room publish/subscribe). */
  readonly nc: NatsConnection;
  /** `unibus.v1.membership.users.*` (admin only). */
  readonly users: UsersApi;
  /** `unibus.v1.membership.rooms.*`. */
  readonly rooms: RoomsApi;
  /** `unibus.v1.membership.admin.*` (bootstrap identity only). */
  readonly admin: AdminApi;
  /** `unibus.v1.keys.*`: agreement keys and room-key epochs (see `rekeyRoom`, `KeysServiceKeyring`). */
  readonly keys: KeysApi;
  /** The rooms' membership logs this client has verified (contracts/specs/membership-log.md). */
  readonly roomLogs: RoomLogs;
  /** The users log this client has verified from its root (who is an admin). */
  readonly usersLog: UsersLogSync;
  /**
   * Sends `body` as JSON to `subject` with a signed envelope in the headers
   * and returns the decoded reply.
   *
   * @throws UnibusError when the service answers with an error reply.
   */
  request<T = unknown>(subject: string, body: unknown, opts?: RequestOptions): Promise<T>;
  /**
   * Sends raw `data` (e.g. a binary frame) to `subject` with a signed envelope
   * over exactly those bytes, and returns the reply message undecoded.
   */
  requestBytes(subject: string, data: Uint8Array, opts?: RequestOptions): Promise<Msg>;
  /**
   * Opens an end-to-end encrypted room as this principal, with room keys
   * from `keys`. Its persistence, frame size and quota come from `rooms.get`
   * on first publish (a failed lookup fails the publish); `liveOnly` skips
   * that for a room known to have no stream (a bare server, benchmarks),
   * and such a room has no history.
   */
  room(roomId: string, keys: RoomKeySource, opts?: { liveOnly?: boolean }): Room;
  /** Connection status events (disconnect, reconnect, …), e.g. to observe a kick. */
  status(): AsyncIterable<Status>;
  /** Resolves when the connection is closed for good (an error if it closed abnormally). */
  closed(): Promise<void | Error>;
  /** Flushes and closes the connection. */
  close(): Promise<void>;
}

function isConnectionLost(err: unknown): boolean {
  return err instanceof UnibusError && err.reason === ErrorReason.ConnectionLost;
}

function connectionLost(message: string, cause?: unknown): UnibusError {
  return new UnibusError(ErrorCode.Unavailable, ErrorReason.ConnectionLost, message, cause === undefined ? {} : { cause });
}

/** True for the service's 409 `in_progress`: the first copy of this request is still running. */
function isInProgressReply(msg: Msg): boolean {
  return msg.headers?.get(ServiceErrorCodeHeader) === String(ErrorCode.Conflict) && (msg.headers?.get(ServiceErrorHeader) ?? "").startsWith(`${ErrorReason.InProgress}:`);
}

// The service accepts a timestamp up to 30 s old; resending the same signed
// mutation stops at 20 s so clock skew cannot turn the last resend stale.
const MUTATION_RESEND_WINDOW_MS = 20_000;
const IN_PROGRESS_BACKOFF_MS = 100;

const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;
// nats.js waits this long for a handshake that the server closed half-way
// (its default, 20 s, stranded kicked clients); a login is milliseconds here.
const CONNECT_TIMEOUT_MS = 5_000;

class UnibusClientImpl implements UnibusClient {
  readonly principal: string;
  readonly users: UsersApi;
  readonly rooms: RoomsApi;
  readonly admin: AdminApi;
  readonly keys: KeysApi;
  readonly roomLogs: RoomLogs;
  readonly usersLog: UsersLogSync;
  readonly #key: SigningKey;
  readonly #timeoutMs: number;
  /** Live-frame replay windows of every room, for the life of the client (frames.md §Freshness). */
  readonly #replayGuard = new ReplayGuard();
  /** Rejecters of the requests in flight, called when the connection drops. */
  readonly #inFlight = new Set<() => void>();
  /** Resolvers of callers waiting for the next reconnect. */
  readonly #waitingForReconnect = new Set<() => void>();
  #connected = true;
  /** Reconnects so far: a request that spans one may have lost its reply with the old connection. */
  #reconnects = 0;

  constructor(
    readonly nc: NatsConnection,
    key: SigningKey,
    timeoutMs: number,
    backoff: ReconnectBackoff,
    logOpts: RoomLogsOptions = {},
    usersLogOpts: UsersLogSyncOptions = {},
  ) {
    this.principal = key.principal;
    this.#key = key;
    this.#timeoutMs = timeoutMs;
    const send = <T>(subject: string, body: unknown): Promise<T> => this.request<T>(subject, body);
    this.users = new UsersApi(send);
    this.rooms = new RoomsApi(send);
    this.admin = new AdminApi(send);
    this.keys = new KeysApi(<T>(subject: string, body: unknown, opts?: RequestOptions) => this.request<T>(subject, body, opts));
    this.usersLog = new UsersLogSync((fromSeq, limit) => this.users.log(fromSeq, limit), { own: key, ...usersLogOpts });
    this.roomLogs = new RoomLogs((roomId, fromSeq, limit) => this.rooms.log(roomId, fromSeq, limit), {
      own: key,
      ...logOpts,
      adminAuthority: this.usersLog.cached,
      refreshAdminAuthority: () => this.usersLog.sync(),
    });
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === "error" && s.error.name === "AuthorizationError") backoff.refused();
        if (s.type === "disconnect") {
          this.#connected = false;
          for (const fail of [...this.#inFlight]) fail();
        }
        if (s.type === "reconnect") {
          backoff.connected();
          this.#reconnects++;
          this.#connected = true;
          for (const resume of [...this.#waitingForReconnect]) resume();
        }
      }
    })();
  }

  async request<T = unknown>(subject: string, body: unknown, opts: RequestOptions = {}): Promise<T> {
    const data = new TextEncoder().encode(JSON.stringify(body ?? {}));
    return decodeReply<T>(await this.requestBytes(subject, data, opts));
  }

  async requestBytes(subject: string, data: Uint8Array, opts: RequestOptions = {}): Promise<Msg> {
    const timeoutMs = opts.timeoutMs ?? this.#timeoutMs;
    // One deadline for the whole call, resends and the wait for a reconnect
    // included: a caller that set a timeout gets an answer by then, even while
    // the client is reconnecting to a node that is down.
    const deadline = Date.now() + timeoutMs;
    const left = (): number => Math.max(0, deadline - Date.now());
    if (ReadOnlySubjects.has(subject)) {
      try {
        return await this.#attempt(subject, data, signEnvelope(this.#key, subject, data), left());
      } catch (err) {
        // A read changes nothing, so it is sent again (freshly signed: new
        // nonce and timestamp) once the client is back with its new permissions.
        if (!isConnectionLost(err)) throw err;
        // Resend only once the client is back: bytes written while the old
        // socket is closing are lost with it.
        if (!(await this.#reconnected(left()))) throw err;
        return this.#attempt(subject, data, signEnvelope(this.#key, subject, data), left());
      }
    }
    // A mutation is resent as the very same signed request (same nonce and
    // timestamp): the service answers a repeat with the first outcome, so a
    // kick in the middle neither loses the reply nor applies it twice. Resends
    // stop at the caller's deadline and well inside the service's freshness window.
    const envelope = signEnvelope(this.#key, subject, data);
    const resendUntil = Math.min(envelope.timestamp + MUTATION_RESEND_WINDOW_MS, deadline);
    for (let attempt = 0; ; attempt++) {
      try {
        const msg = await this.#attempt(subject, data, envelope, left());
        if (isInProgressReply(msg) && Date.now() + IN_PROGRESS_BACKOFF_MS < resendUntil) {
          await sleep(Math.min(IN_PROGRESS_BACKOFF_MS * (attempt + 1), 1_000, Math.max(0, resendUntil - Date.now())));
          continue;
        }
        return msg;
      } catch (err) {
        if (!isConnectionLost(err) || Date.now() >= resendUntil) throw err;
        if (!(await this.#reconnected(Math.max(0, resendUntil - Date.now())))) throw err;
      }
    }
  }

  /** Resolves true at the next reconnect (at once if connected), false after `ms` without one. */
  #reconnected(ms: number): Promise<boolean> {
    if (this.#connected) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (back: boolean): void => {
        clearTimeout(timer);
        this.#waitingForReconnect.delete(onReconnect);
        resolve(back);
      };
      const onReconnect = (): void => done(true);
      const timer = setTimeout(() => done(false), ms);
      this.#waitingForReconnect.add(onReconnect);
    });
  }

  /**
   * One signed request. A reply addressed to a connection that drops (a kick
   * applying new permissions, a server restart) is lost for good, so rather
   * than wait out the timeout the request fails at the disconnect with a
   * retryable 503 `connection_lost`: it may or may not have been applied. A
   * request that times out while the client is not connected fails the same
   * way: nats.js keeps it buffered and may still send it after a reconnect.
   */
  async #attempt(subject: string, data: Uint8Array, envelope: Envelope, timeoutMs: number): Promise<Msg> {
    if (timeoutMs <= 0) throw connectionLost("the request timed out waiting for the connection to come back; it was not sent");
    // Bytes written between the disconnect and the reconnect can go out on
    // the closing socket and be lost with it, so a send waits for the new one.
    if (!this.#connected) {
      const started = Date.now();
      const back = await this.#reconnected(timeoutMs);
      timeoutMs -= Date.now() - started;
      if (!back || timeoutMs <= 0) throw connectionLost("the request timed out waiting for the connection to come back; it was not sent");
    }
    const reconnects = this.#reconnects;
    const h = envelopeHeaders(envelope);
    let onLoss: (() => void) | undefined;
    const lost = new Promise<never>((_, reject) => {
      onLoss = () => reject(connectionLost("the connection dropped while the request was in flight; it may or may not have been applied"));
    });
    const cb = onLoss as () => void;
    this.#inFlight.add(cb);
    try {
      return await Promise.race([this.nc.request(subject, data, { headers: h, timeout: timeoutMs }), lost]);
    } catch (err) {
      // No reply, and the connection was replaced meanwhile (a kick seen only
      // after the request went out on the old socket): retryable as above.
      if (err instanceof Error && err.name === "TimeoutError" && this.#reconnects !== reconnects) {
        throw connectionLost("the connection was replaced while the request was in flight; it may or may not have been applied", err);
      }
      if (!this.#connected && !(err instanceof UnibusError)) {
        throw connectionLost("the request timed out while the client was reconnecting; it may or may not have been applied", err);
      }
      throw err;
    } finally {
      this.#inFlight.delete(cb);
    }
  }

  room(roomId: string, keys: RoomKeySource, opts: { liveOnly?: boolean } = {}): Room {
    if (opts.liveOnly === true) return createRoom(this.nc, this.#key, roomId, keys, undefined, this.#replayGuard);
    return createRoom(
      this.nc,
      this.#key,
      roomId,
      keys,
      {
        get: (id) => this.rooms.get(id),
        history: (req, opts) => this.request(Subjects.membership.roomsHistory, req, opts ?? {}),
      },
      this.#replayGuard,
    );
  }

  status(): AsyncIterable<Status> {
    return this.nc.status();
  }

  closed(): Promise<void | Error> {
    return this.nc.closed();
  }

  async close(): Promise<void> {
    if (this.nc.isClosed()) return;
    await this.nc.close();
  }
}

/**
 * Connects to the bus as `identity`: nkey authentication with a cached
 * node:crypto key (nats.js's own authenticator manages ~50 connects/s,
 * nats-notes "Auth callout"), an inbox under `_INBOX.<principal>` (the only
 * inbox the auth callout lets a principal subscribe to), and reconnection
 * forever, authorization errors included: a kicked client must come back
 * with fresh permissions on its own, and a callout hiccup must not strand it
 * (nats.js otherwise gives up after two auth errors in a row). After a
 * refusal it backs off exponentially with jitter ({@link ReconnectBackoff}),
 * so a revoked or leaked client does not hammer the auth callout.
 */
export async function connect(opts: ConnectOptions): Promise<UnibusClient> {
  const key = opts.identity instanceof SigningKey ? opts.identity : opts.identity.signingKey;
  const servers = opts.servers ?? (opts.url === undefined ? undefined : [opts.url]);
  if (servers === undefined || servers.length === 0) throw new TypeError("connect: give url or servers");
  const backoff = new ReconnectBackoff();
  const nc = await natsConnect({
    servers,
    ...(opts.name === undefined ? {} : { name: opts.name }),
    authenticator: nkeyAuthenticator(key),
    inboxPrefix: `_INBOX.${key.principal}`,
    ignoreAuthErrorAbort: true,
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectDelayHandler: () => backoff.delayMs(),
    timeout: CONNECT_TIMEOUT_MS,
    ...tlsOption(servers, opts.tls),
  });
  return new UnibusClientImpl(nc, key, opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, backoff, {
    ...(opts.trustedAdmins === undefined ? {} : { trustedAdmins: opts.trustedAdmins }),
    ...(opts.roomLogHeads === undefined ? {} : { heads: opts.roomLogHeads }),
  }, {
    ...(opts.trustedRoot === undefined ? {} : { trustedRoot: opts.trustedRoot }),
    ...(opts.usersLogPin === undefined ? {} : { pin: opts.usersLogPin }),
  });
}
