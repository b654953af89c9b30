// The end-to-end suites' bus: the production callout configuration
// (@unibus/testbus) plus the keys and blobs services in-process, each on a
// connection with the exact permissions `unibus up` gives it.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { createBlobsService } from "@unibus/blobs";
import { writeIdentityFile } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { createKeysService } from "@unibus/keys";
import type { RunningService } from "@unibus/kit";
import { KeysServiceKeyring } from "@unibus/sdk";
import type { RoomMessage, RoomReject } from "@unibus/sdk";
import { startTestBus } from "@unibus/testbus";
import type { TestBus, TestBusMember } from "@unibus/testbus";

/** A test bus with every service a room needs. */
export interface E2eBus {
  readonly bus: TestBus;
  stop(): Promise<void>;
}

/** Starts the bus, then keys and blobs under their production permissions. */
export async function startE2eBus(): Promise<E2eBus> {
  const bus = await startTestBus({ logger: pino({ level: process.env.E2E_LOG ?? "silent" }) });
  const logger = pino({ level: "silent" });
  const running: { stop(): Promise<void> }[] = [];
  try {
    running.push(await createKeysService(await bus.serviceConnection("keys"), { logger }));
    const blobs: RunningService = await createBlobsService(await bus.serviceConnection("blobs"), { logger, maxBlobBytes: 1024 * 1024 });
    running.push(blobs);
  } catch (err) {
    await bus.stop();
    throw err;
  }
  return {
    bus,
    async stop() {
      await Promise.allSettled(running.map((r) => r.stop()));
      await bus.stop();
    },
  };
}

/** A temp dir of identity files, to run the CLI on an e2e bus as one identity or another. */
export interface CliIdentities {
  /** The dir, also the commands' cwd. */
  readonly dir: string;
  /** Writes `identity` to `<dir>/<name>.id` (0600) and returns the CLI environment that connects as it. */
  env(name: string, identity: Identity): Promise<{ UNIBUS_URL: string; UNIBUS_IDENTITY: string }>;
  /** Deletes the dir and the identity files in it. */
  remove(): Promise<void>;
}

/** Makes a {@link CliIdentities} dir for `bus`. */
export async function cliIdentities(bus: TestBus, prefix: string): Promise<CliIdentities> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return {
    dir,
    async env(name, identity) {
      const path = join(dir, `${name}.id`);
      await writeIdentityFile(path, identity);
      return { UNIBUS_URL: bus.url, UNIBUS_IDENTITY: path };
    },
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A member with its agreement key registered and a keyring over the keys service. */
export interface KeyedMember extends TestBusMember {
  readonly keyring: KeysServiceKeyring;
}

/** Adds a user, connects it, registers its agreement key. */
export async function keyedMember(bus: TestBus, handle: string): Promise<KeyedMember> {
  const m = await bus.addMember(handle);
  await m.client.keys.registerAgreementKey(m.identity);
  return { ...m, keyring: new KeysServiceKeyring(m.client, m.identity) };
}

/**
 * The next item of `it` that satisfies `match`, or undefined after `ms`.
 * Items that do not match are consumed (they are checked by the caller's predicate only).
 */
export async function nextMatching<T>(it: AsyncIterator<T>, match: (v: T) => boolean, ms: number): Promise<T | undefined> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) return undefined;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), left)));
    const r = await Promise.race([it.next(), timeout]).finally(() => clearTimeout(timer));
    if (r === "timeout" || r.done === true) return undefined;
    if (match(r.value)) return r.value;
  }
}

/** Collects every message of `sub` in the background (for "never received" checks). */
export function recordMessages(sub: AsyncIterable<RoomMessage>): RoomMessage[] {
  const seen: RoomMessage[] = [];
  void (async () => {
    for await (const m of sub) seen.push(m);
  })();
  return seen;
}

/** Collects a room's reject events in the background. */
export function recordRejects(rejects: AsyncIterable<RoomReject>): RoomReject[] {
  const seen: RoomReject[] = [];
  void (async () => {
    for await (const r of rejects) seen.push(r);
  })();
  return seen;
}
