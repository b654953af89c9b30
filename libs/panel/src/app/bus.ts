/// <reference lib="dom" />
// The panel's bus client: a nats.js WebSocket connection authenticated and
// signing exactly as the SDK does (same authenticator, same envelope code).
import { wsconnect } from "@nats-io/nats-core";
import type { NatsConnection } from "@nats-io/nats-core";
import { nkeyAuthenticator } from "@unibus/crypto";
import type { SigningKey } from "@unibus/crypto";
import { Subjects } from "@unibus/contracts";
import { RoomsApi, signedRequest, UsersApi } from "@unibus/sdk";

const REQUEST_TIMEOUT_MS = 5_000;
const CONNECT_TIMEOUT_MS = 5_000;
/** How long a `$SRV` discovery request collects replies from every replica. */
const DISCOVERY_WAIT_MS = 600;

/** Admin-signed posture document of healthz; older buses answer only `healthz.status`. */
export const POSTURE_SUBJECT = Subjects.healthz.posture;

/** One micro service replica's `$SRV.STATS` reply (the fields the panel reads). */
export interface MicroStats {
  readonly name: string;
  readonly id: string;
  readonly endpoints?: readonly { name: string; subject: string; num_requests: number; num_errors: number }[];
}

/** One replica's `$SRV.INFO` reply. */
export interface MicroInfo {
  readonly name: string;
  readonly id: string;
  readonly version: string;
  readonly endpoints?: readonly { name: string; subject: string }[];
}

/** A signed-in panel session. */
export class Bus {
  readonly users: UsersApi;
  readonly rooms: RoomsApi;

  private constructor(
    readonly nc: NatsConnection,
    readonly key: SigningKey,
  ) {
    const send = <T>(subject: string, body: unknown): Promise<T> => this.request<T>(subject, body);
    this.users = new UsersApi(send);
    this.rooms = new RoomsApi(send);
  }

  /**
   * Connects as `key`. The inbox prefix is the principal's own, the only one
   * the auth callout lets a principal subscribe to, as for the CLI.
   */
  static async connect(url: string, key: SigningKey): Promise<Bus> {
    const nc = await wsconnect({
      servers: url,
      authenticator: nkeyAuthenticator(key),
      inboxPrefix: `_INBOX.${key.principal}`,
      name: "unibus-panel",
      timeout: CONNECT_TIMEOUT_MS,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      ignoreAuthErrorAbort: true,
    });
    return new Bus(nc, key);
  }

  get principal(): string {
    return this.key.principal;
  }

  /** A signed JSON request (the SDK's own signing), decoded; service errors throw `UnibusError`. */
  request<T>(subject: string, body: unknown): Promise<T> {
    return signedRequest<T>(this.nc, this.key, subject, body, REQUEST_TIMEOUT_MS);
  }

  /** Every replica's reply to a micro discovery request (`$SRV.STATS`, `$SRV.INFO.<name>`, …). */
  async discover<T>(subject: string): Promise<T[]> {
    const out: T[] = [];
    const replies = await this.nc.requestMany(subject, undefined, { maxWait: DISCOVERY_WAIT_MS, strategy: "timer" });
    for await (const m of replies) {
      if (m.data.length === 0) continue;
      try {
        out.push(m.json<T>());
      } catch {
        // A reply that is not JSON is not a micro service; skip it.
      }
    }
    return out;
  }

  async close(): Promise<void> {
    if (!this.nc.isClosed()) await this.nc.close();
  }
}
