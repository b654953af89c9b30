import { ErrorCode, UnibusError } from "@unibus/contracts";

/** Page sizes of the list endpoints; the maxima are the request schemas' (each keeps a full page under half the 1 MiB payload limit). */
export const PageSize = {
  usersDefault: 500,
  roomsDefault: 250,
  membersDefault: 500,
  logDefault: 256,
} as const;

/** The stable reason of a cursor the service did not issue or cannot read. */
export const InvalidCursorReason = "invalid_cursor" as const;

function invalidCursor(): UnibusError {
  return new UnibusError(ErrorCode.BadRequest, InvalidCursorReason, "cursor is not one this endpoint issued");
}

const SEQ_CURSOR = /^s([1-9][0-9]{0,15})$/;
const ID_CURSOR = /^r([a-z0-9]{8,32})$/;

/** A cursor naming a stream sequence: where the next page of a bucket listing starts. */
export function seqCursor(seq: number): string {
  return `s${seq}`;
}

/** The stream sequence of a {@link seqCursor}; 1 (the start) when absent. */
export function parseSeqCursor(cursor: string | undefined): number {
  if (cursor === undefined) return 1;
  const m = SEQ_CURSOR.exec(cursor);
  const seq = m?.[1] === undefined ? NaN : Number(m[1]);
  if (!Number.isSafeInteger(seq)) throw invalidCursor();
  return seq;
}

/** A cursor naming the last room id of a page of the caller's own rooms (listed by id). */
export function roomIdCursor(roomId: string): string {
  return `r${roomId}`;
}

/** The room id after which the next page starts; "" (before every id) when absent. */
export function parseRoomIdCursor(cursor: string | undefined): string {
  if (cursor === undefined) return "";
  const m = ID_CURSOR.exec(cursor);
  if (m?.[1] === undefined) throw invalidCursor();
  return m[1];
}
