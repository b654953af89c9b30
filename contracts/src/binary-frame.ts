/**
 * The body of a binary endpoint (a blob chunk on the wire): a 4-byte
 * big-endian length, that many bytes of UTF-8 JSON (the part the endpoint's
 * schema validates), then the raw payload. One byte string, so the signed
 * envelope's body hash covers the JSON fields and the payload together and
 * neither can be swapped without breaking the signature.
 */

/** Bytes of the JSON-length prefix. */
export const BINARY_FRAME_PREFIX_BYTES = 4;

/** A decoded binary frame. */
export interface BinaryFrame {
  /** The JSON part, still as bytes (the caller parses and validates it). */
  readonly json: Uint8Array;
  /** The raw payload after the JSON part (may be empty). */
  readonly payload: Uint8Array;
}

/** Encodes `value` as JSON and appends `payload`. */
export function encodeBinaryFrame(value: unknown, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(value));
  const out = new Uint8Array(BINARY_FRAME_PREFIX_BYTES + json.byteLength + payload.byteLength);
  new DataView(out.buffer).setUint32(0, json.byteLength, false);
  out.set(json, BINARY_FRAME_PREFIX_BYTES);
  out.set(payload, BINARY_FRAME_PREFIX_BYTES + json.byteLength);
  return out;
}

/** Splits a binary frame; null when the prefix or length is impossible (the caller rejects it as malformed). */
export function decodeBinaryFrame(data: Uint8Array): BinaryFrame | null {
  if (data.byteLength < BINARY_FRAME_PREFIX_BYTES) return null;
  const length = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0, false);
  const end = BINARY_FRAME_PREFIX_BYTES + length;
  if (end > data.byteLength) return null;
  return { json: data.subarray(BINARY_FRAME_PREFIX_BYTES, end), payload: data.subarray(end) };
}
