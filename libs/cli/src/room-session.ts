import { KeysServiceKeyring, rekeyRoom, waitForRoomAccess } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import type { Identity } from "@unibus/crypto";
import { toBase64Url } from "@unibus/crypto";

/** What {@link prepareRoomKeys} did, for the caller to report. */
export interface RoomKeysReady {
  /** A keyring over the keys service, for `client.room(roomId, keyring)`. */
  readonly keyring: KeysServiceKeyring;
  /** True when this call registered the identity's agreement key. */
  readonly registered: boolean;
  /** The epoch this call started, when the room had none and the caller owns it. */
  readonly rekeyedTo: number | undefined;
  /** The caller's role in the room. */
  readonly role: "owner" | "member";
}

/**
 * Gets an identity ready to talk in an E2E room through the public SDK only:
 * waits until its connection holds the room grant, registers its agreement
 * key unless the keys service already lists this exact key for it, and, as
 * an owner of a room with no epoch yet, starts epoch 1 (nobody could send
 * otherwise).
 */
export async function prepareRoomKeys(client: UnibusClient, identity: Identity, roomId: string, opts: { accessTimeoutMs?: number } = {}): Promise<RoomKeysReady> {
  const { members } = await client.rooms.get(roomId);
  const me = members.find((m) => m.principal === client.principal);
  if (me === undefined) throw new Error(`not a member of room ${roomId}`);
  await waitForRoomAccess(client, roomId, { timeoutMs: opts.accessTimeoutMs ?? 10_000 });
  const listed = (await client.keys.agreementKeys(roomId)).members.find((m) => m.principal === client.principal);
  const mine = toBase64Url(identity.agreementPublicKey);
  let registered = false;
  if (listed?.agreementKey !== mine) {
    await client.keys.registerAgreementKey(identity);
    registered = true;
  }
  let rekeyedTo: number | undefined;
  if (me.role === "owner" && (await client.keys.epochs(roomId)).epochs.length === 0) {
    rekeyedTo = (await rekeyRoom(client, identity.signingKey, roomId)).epoch;
  }
  return { keyring: new KeysServiceKeyring(client, identity), registered, rekeyedTo, role: me.role === "owner" ? "owner" : "member" };
}

/** `HH:MM:SS` in local time. */
export function clockTime(d = new Date()): string {
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}
