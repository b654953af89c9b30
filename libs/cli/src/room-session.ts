import { join } from "node:path";
import { FileEpochStore, prepareRoomKeys as prepareRoomKeysInSdk } from "@unibus/sdk";
import type { RoomKeysPrepared, UnibusClient } from "@unibus/sdk";
import type { Identity } from "@unibus/crypto";
import { resolveHome } from "./home.js";

/** What {@link prepareRoomKeys} did, for the caller to report. */
export type RoomKeysReady = RoomKeysPrepared;

/**
 * The epoch floor of one identity, kept in the CLI's home directory (0600):
 * a later `unibus chat` refuses a keys service that offers an older epoch
 * than one this identity already verified.
 */
export function cliEpochStore(identity: Identity, home: CliHomeContext): FileEpochStore {
  return new FileEpochStore(join(resolveHome(home.env, home.cwd).root, "epochs", `${identity.principal}.json`));
}

/** Where the CLI's home directory is resolved from (the command's io). */
export interface CliHomeContext {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
}

/**
 * Gets an identity ready to talk in an E2E room: the SDK's `prepareRoomKeys`
 * (membership, room grant, agreement key, first epoch) with the CLI's
 * persisted epoch floor.
 */
export function prepareRoomKeys(client: UnibusClient, identity: Identity, roomId: string, home: CliHomeContext, opts: { accessTimeoutMs?: number } = {}): Promise<RoomKeysReady> {
  return prepareRoomKeysInSdk(client, identity, roomId, { ...opts, epochStore: cliEpochStore(identity, home) });
}

/** `HH:MM:SS` in local time. */
export function clockTime(d = new Date()): string {
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}
