import { EnvelopeHeader, isPrincipal } from "@unibus/crypto";
import { Access } from "./definition.js";

/** Root of every inbox; the callout grants each principal `_INBOX.<principal>.>` only. */
export const INBOX_ROOT = "_INBOX.";

/**
 * Whether a service may answer `reply`. The requester picks the reply subject
 * and the service publishes there with its own rights (its KV buckets, the
 * JetStream API), so it only ever answers a subject the requester could have
 * received on anyway (threat: a member overwriting an allowlist record, or
 * reaching another principal's inbox, by naming it as its reply):
 *
 * - an endpoint that needs an envelope answers only `_INBOX.<signer>.…`, where
 *   the signer is the header's claimed one; a reply sent after the envelope
 *   verifies therefore reaches the proven signer's own inbox, and an error
 *   found before that reaches only the inbox of whoever it claims to be;
 *   a request with no (well-formed) claimed signer is never answered;
 * - a public or handshake endpoint (no envelope) answers any inbox.
 *
 * Anything else is dropped before any work is done.
 */
export function replyPermitted(access: Access, reply: string | undefined, headers: { get(name: string): string } | undefined): reply is string {
  if (reply === undefined || !reply.startsWith(INBOX_ROOT) || reply.length === INBOX_ROOT.length) return false;
  if (access === Access.Public || access === Access.Handshake) return true;
  const claimed = headers?.get(EnvelopeHeader.signer) ?? "";
  if (!isPrincipal(claimed)) return false;
  const own = `${INBOX_ROOT}${claimed}.`;
  return reply.startsWith(own) && reply.length > own.length;
}
