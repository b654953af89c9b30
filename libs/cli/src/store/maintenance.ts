import { createHash } from "node:crypto";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { createIdentity, nkeyAuthenticator } from "@unibus/crypto";
import { NatsServerStartError, envRef, startNatsServer } from "@unibus/natsd";
import type { NatsConfig, NatsServerProcess } from "@unibus/natsd";
import { CliError } from "../errors.js";

/** The app account of the bus config (the auth callout's default): every stream lives there. */
export const APP_ACCOUNT = "UNIBUS";
const KEY_ENV = "UNIBUS_JS_KEY";
const PREV_KEY_ENV = "UNIBUS_JS_PREV_KEY";
/** Snapshot chunk size: well under the default max_payload and the backup's frame limit. */
const CHUNK_SIZE = 256 * 1024;
/** A snapshot or restore that sends nothing for this long has stalled. */
const STALL_MS = 30_000;

/** Ciphers of a maintenance server: `key` absent means a plaintext store. */
export interface StoreKeys {
  readonly key?: string;
  readonly prevKey?: string;
}

/** A private nats-server on a JetStream store, with a full-rights user known only to this process. */
export interface MaintenanceServer {
  readonly nc: NatsConnection;
  readonly server: NatsServerProcess;
  stop(): Promise<void>;
}

/** Stream names found on disk under the app account (each stream is a directory named after it). */
export async function streamDirs(storeDir: string): Promise<string[]> {
  try {
    const entries = await readdir(join(storeDir, "jetstream", APP_ACCOUNT, "streams"), { withFileTypes: true });
    return entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

/** Stream dirs without `meta.key`: written without at-rest encryption. */
export async function plaintextStreams(storeDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of await streamDirs(storeDir)) {
    try {
      await stat(join(storeDir, "jetstream", APP_ACCOUNT, "streams", name, "meta.key"));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      out.push(name);
    }
  }
  return out;
}

/**
 * Starts nats-server on `storeDir` with only the accounts the store needs and
 * one user whose nkey lives in this process's memory: nobody else can connect
 * while streams are copied. Keys reach the server through its environment.
 */
export async function startMaintenanceServer(opts: { bin: string; storeDir: string; workDir: string; keys: StoreKeys }): Promise<MaintenanceServer> {
  const user = createIdentity({ label: "store-maintenance" });
  const env: Record<string, string> = {};
  const jetstream: NatsConfig = { store_dir: opts.storeDir };
  if (opts.keys.key !== undefined) {
    jetstream.cipher = "chachapoly";
    jetstream.key = envRef(KEY_ENV);
    env[KEY_ENV] = opts.keys.key;
  }
  if (opts.keys.prevKey !== undefined) {
    jetstream.prev_key = envRef(PREV_KEY_ENV);
    env[PREV_KEY_ENV] = opts.keys.prevKey;
  }
  const config: NatsConfig = {
    server_name: "unibus-local",
    host: "127.0.0.1",
    port: -1,
    jetstream,
    accounts: { SYS: {}, [APP_ACCOUNT]: { jetstream: "enabled", users: [{ nkey: user.principal }] } },
    system_account: "SYS",
  };
  let server: NatsServerProcess;
  try {
    server = await startNatsServer({ config, dir: opts.workDir, bin: opts.bin, name: "nats-server (store maintenance)", env });
  } catch (err) {
    if (err instanceof NatsServerStartError) throw new CliError(`nats-server did not start on ${opts.storeDir}: ${err.message}`, { cause: err });
    throw err;
  }
  try {
    const nc = await connect({ servers: server.url, reconnect: false, name: "unibus-store", authenticator: nkeyAuthenticator(user.signingKey) });
    return {
      nc,
      server,
      async stop() {
        await nc.close().catch(() => undefined);
        await server.stop();
      },
    };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

async function api<T>(nc: NatsConnection, subject: string, body: unknown, timeout = 10_000): Promise<T> {
  const reply = await nc.request(subject, body === undefined ? undefined : JSON.stringify(body), { timeout });
  const parsed = reply.json<T & { error?: { code?: number; description?: string } }>();
  if (parsed.error) throw new JsApiError(parsed.error.code ?? 0, `${subject}: ${parsed.error.description ?? "error"}`);
  return parsed;
}

class JsApiError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** Every stream name the server has loaded in the app account. */
export async function loadedStreams(nc: NatsConnection): Promise<string[]> {
  const names: string[] = [];
  for (;;) {
    const page = await api<{ streams: string[] | null; total: number }>(nc, "$JS.API.STREAM.NAMES", { offset: names.length });
    names.push(...(page.streams ?? []));
    if ((page.streams ?? []).length === 0 || names.length >= page.total) return names.sort();
  }
}

/**
 * Fails when a stream on disk was not loaded: with a wrong key nats-server
 * skips a stream it cannot decrypt and starts anyway, and a bus started on
 * that would look empty and write new data beside the unreadable old.
 */
export async function assertAllStreamsLoaded(m: MaintenanceServer, storeDir: string, what: string): Promise<string[]> {
  const onDisk = await streamDirs(storeDir);
  const loaded = new Set(await loadedStreams(m.nc));
  const missing = onDisk.filter((n) => !loaded.has(n));
  if (missing.length > 0) {
    throw new CliError(
      `${missing.length} of ${onDisk.length} streams in ${storeDir} cannot be opened with ${what} (${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", …" : ""}): ` +
        "wrong key? Nothing was changed; the server log is in " +
        m.server.logPath,
    );
  }
  return onDisk;
}

/** What must be equal before and after a copy: counts, sequence range and a hash over every message. */
export interface StreamDigest {
  readonly messages: number;
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly sha256: string;
  /** Durable consumers with their positions: `name delivered ackFloor`. */
  readonly consumers: readonly string[];
}

interface StoredMessage {
  subject: string;
  seq: number;
  hdrs?: string;
  data?: string;
  time: string;
}

/** Reads every message of `stream` (leader get, by next sequence) into a digest. */
export async function digestStream(nc: NatsConnection, stream: string): Promise<StreamDigest> {
  const info = await api<{ state: { messages: number; first_seq: number; last_seq: number } }>(nc, `$JS.API.STREAM.INFO.${stream}`, undefined);
  const hash = createHash("sha256");
  let seq = info.state.first_seq;
  let count = 0;
  while (count < info.state.messages) {
    let msg: StoredMessage;
    try {
      ({ message: msg } = await api<{ message: StoredMessage }>(nc, `$JS.API.STREAM.MSG.GET.${stream}`, { seq, next_by_subj: ">" }));
    } catch (err) {
      if (err instanceof JsApiError && err.code === 404) break;
      throw err;
    }
    hash.update(JSON.stringify([msg.seq, msg.subject, msg.hdrs ?? "", msg.data ?? "", msg.time]));
    hash.update("\n");
    count++;
    seq = msg.seq + 1;
  }
  if (count !== info.state.messages) throw new CliError(`stream ${stream}: read ${count} of ${info.state.messages} messages`);
  return { messages: count, firstSeq: info.state.first_seq, lastSeq: info.state.last_seq, sha256: hash.digest("hex"), consumers: await consumerPositions(nc, stream) };
}

interface ConsumerInfo {
  name: string;
  delivered: { stream_seq: number };
  ack_floor: { stream_seq: number };
}

/** Every consumer of `stream` with where it stands, sorted: a copy that dropped or rewound one must not pass. */
async function consumerPositions(nc: NatsConnection, stream: string): Promise<string[]> {
  const out: string[] = [];
  for (;;) {
    const page = await api<{ consumers: ConsumerInfo[] | null; total: number }>(nc, `$JS.API.CONSUMER.LIST.${stream}`, { offset: out.length });
    const items = page.consumers ?? [];
    out.push(...items.map((c) => `${c.name} ${c.delivered.stream_seq} ${c.ack_floor.stream_seq}`));
    if (items.length === 0 || out.length >= page.total) return out.sort();
  }
}

/** Digests of every loaded stream, by name. */
export async function digestAll(nc: NatsConnection, streams: readonly string[]): Promise<Map<string, StreamDigest>> {
  const out = new Map<string, StreamDigest>();
  for (const s of streams) out.set(s, await digestStream(nc, s));
  return out;
}

/** Throws unless both sides hold the same streams with the same digests. */
export function assertSameDigests(before: ReadonlyMap<string, StreamDigest>, after: ReadonlyMap<string, StreamDigest>, what: string): void {
  const names = new Set([...before.keys(), ...after.keys()]);
  for (const name of names) {
    const a = before.get(name);
    const b = after.get(name);
    if (a === undefined || b === undefined || JSON.stringify(a) !== JSON.stringify(b)) {
      throw new CliError(`${what}: stream ${name} differs (before ${JSON.stringify(a ?? null)}, after ${JSON.stringify(b ?? null)})`);
    }
  }
}

/** A stream's config and state as the snapshot API reports them; restore needs both. */
export interface SnapshotMeta {
  readonly config: { name: string } & Record<string, unknown>;
  readonly state: Record<string, unknown>;
}

/**
 * Snapshots `stream` (data and consumers) through the JetStream API: `onMeta`
 * gets its config and state first, then each chunk goes to `onChunk` before
 * it is acknowledged (flow control: the server waits for the acks).
 */
export async function snapshotStream(
  nc: NatsConnection,
  stream: string,
  onMeta: (meta: SnapshotMeta) => Promise<void>,
  onChunk: (chunk: Uint8Array) => Promise<void>,
): Promise<SnapshotMeta> {
  const inbox = `_INBOX.store.${createHash("sha256").update(`${Date.now()}${Math.random()}`).digest("hex").slice(0, 16)}`;
  const sub = nc.subscribe(inbox);
  let stalled = false;
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = true;
      sub.unsubscribe();
    }, STALL_MS);
  };
  try {
    const meta = await api<SnapshotMeta>(nc, `$JS.API.STREAM.SNAPSHOT.${stream}`, { deliver_subject: inbox, no_consumers: false, chunk_size: CHUNK_SIZE });
    arm();
    // Chunks wait in the subscription while the caller opens its side (a restore, a backup frame).
    await onMeta(meta);
    let ended = false;
    for await (const m of sub as AsyncIterable<Msg>) {
      arm();
      if (m.data.length === 0) {
        const code = m.headers?.code ?? 0;
        if (code >= 400) throw new CliError(`snapshot of ${stream} failed: ${m.headers?.description ?? code}`);
        ended = true;
        break;
      }
      await onChunk(m.data);
      if (m.reply) m.respond();
    }
    if (!ended) throw new CliError(`snapshot of ${stream} ${stalled ? `stalled for ${STALL_MS / 1000} s` : "ended early"}`);
    return meta;
  } finally {
    clearTimeout(timer);
    sub.unsubscribe();
  }
}

/** An open restore of one stream: send chunks in order, then finish. */
export interface StreamRestore {
  chunk(data: Uint8Array): Promise<void>;
  finish(): Promise<void>;
}

/** Starts restoring `meta.config.name`, which must not exist on the server. */
export async function beginRestore(nc: NatsConnection, meta: SnapshotMeta): Promise<StreamRestore> {
  const { deliver_subject: deliver } = await api<{ deliver_subject: string }>(nc, `$JS.API.STREAM.RESTORE.${meta.config.name}`, { config: meta.config, state: meta.state });
  const checkReply = (reply: Msg): void => {
    if (reply.data.length === 0) return;
    const parsed = reply.json<{ error?: { description?: string } }>();
    if (parsed.error) throw new CliError(`restore of ${meta.config.name} failed: ${parsed.error.description ?? "error"}`);
  };
  return {
    async chunk(data) {
      checkReply(await nc.request(deliver, data, { timeout: STALL_MS }));
    },
    async finish() {
      checkReply(await nc.request(deliver, undefined, { timeout: 120_000 }));
    },
  };
}
