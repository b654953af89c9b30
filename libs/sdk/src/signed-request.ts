import { headers } from "@nats-io/nats-core";
import type { MsgHdrs, NatsConnection } from "@nats-io/nats-core";
import { envelopeToHeaders, signEnvelope } from "@unibus/crypto";
import type { Envelope, SigningKey } from "@unibus/crypto";
import { decodeReply } from "@unibus/contracts";

/**
 * The request headers carrying `envelope`. Every control-plane request is
 * sent this way, by the Node client and by the admin panel in a browser
 * alike, so the services see one wire format whoever signed.
 */
export function envelopeHeaders(envelope: Envelope): MsgHdrs {
  const h = headers();
  for (const [name, value] of Object.entries(envelopeToHeaders(envelope))) h.set(name, value);
  return h;
}

/**
 * One signed JSON request on any nats.js connection (TCP or WebSocket): the
 * body is signed with `key` over exactly the bytes sent, and the reply is
 * decoded (a service error reply becomes a `UnibusError`). No resend: the
 * Node client adds resends on reconnect around the same signing.
 */
export async function signedRequest<T>(nc: NatsConnection, key: SigningKey, subject: string, body: unknown, timeoutMs: number): Promise<T> {
  const data = new TextEncoder().encode(JSON.stringify(body ?? {}));
  const msg = await nc.request(subject, data, { headers: envelopeHeaders(signEnvelope(key, subject, data)), timeout: timeoutMs });
  return decodeReply<T>(msg);
}
