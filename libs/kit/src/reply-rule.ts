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

/** Prefix of the micro discovery subjects (`$SRV.PING|INFO|STATS[.name[.id]]`). */
const DISCOVERY_PREFIX = "$SRV.";

interface Subscribable {
  subscribe(subject: string, opts?: { callback?: (err: Error | null, msg: { reply?: string }) => void; queue?: string }): unknown;
}

/**
 * `nc` as `@nats-io/services` should see it: its `$SRV.*` discovery
 * responders (which the library answers itself, on whatever reply subject
 * the request names) only get requests whose reply is under `_INBOX.`; the
 * rest are dropped and reported to `onDrop` (threat: an admin writing a
 * PING/INFO/STATS body into a KV record or a JetStream API subject with the
 * service's rights). Discovery requests carry no envelope, so the inbox
 * cannot be narrowed to the requester's own; everything else passes through.
 */
export function discoveryGuarded<T extends object>(nc: T, onDrop: (reply: string | undefined) => void): T {
  const target = nc as T & Subscribable;
  const subscribe: Subscribable["subscribe"] = (subject, opts) => {
    const callback = opts?.callback;
    if (!subject.startsWith(DISCOVERY_PREFIX) || callback === undefined) return target.subscribe(subject, opts);
    return target.subscribe(subject, {
      ...opts,
      callback: (err, msg) => {
        if (err === null && !(msg.reply !== undefined && msg.reply.startsWith(INBOX_ROOT) && msg.reply.length > INBOX_ROOT.length)) {
          onDrop(msg.reply);
          return;
        }
        callback(err, msg);
      },
    });
  };
  return new Proxy(target, {
    get(obj, prop) {
      if (prop === "subscribe") return subscribe;
      const value: unknown = Reflect.get(obj, prop, obj);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(obj) : value;
    },
  });
}
