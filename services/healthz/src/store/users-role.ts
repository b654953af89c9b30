import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { Role } from "@unibus/kit";
import { USERS_BUCKET } from "../bus.js";

/**
 * Resolves a caller's role from membership's `users` bucket, read through
 * the stream leader. Opened on first use: healthz must start (and report
 * "not ready") before membership has created the bucket. A read error
 * throws, which the kit answers 503 (fail closed).
 */
export function usersRoleResolver(nc: NatsConnection): (principal: string) => Promise<Role | null> {
  let users: Promise<KV> | undefined;
  return async (principal) => {
    users ??= new Kvm(nc).open(USERS_BUCKET, { allow_direct: false }).catch((err: unknown) => {
      users = undefined;
      throw err;
    });
    const entry = await (await users).get(principal);
    if (entry === null || entry.operation !== "PUT") return null;
    const user = entry.json<{ role?: string; status?: string }>();
    return user.status === "active" && (user.role === "admin" || user.role === "member") ? user.role : null;
  };
}
