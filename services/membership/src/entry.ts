import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { MembershipEnv, ServiceName } from "@unibus/contracts";
import { loadIdentityFile, nkeyAuthenticator, normalisePrincipal } from "@unibus/crypto";
import { kitServiceEntry, loadServiceConfig } from "@unibus/kit";
import type { ServiceEntry } from "@unibus/kit";
import { loadRoomQuotaConfig } from "./quota.js";
import { createMembershipService } from "./service.js";

/**
 * How a process runs membership (its own `main.ts`, or `unibus up`'s one
 * process for every service). Environment, read only here (besides the kit's
 * own UNIBUS_* variables):
 *   UNIBUS_SYS_IDENTITY         identity file of the system-account user that kicks connections
 *   UNIBUS_BOOTSTRAP_PRINCIPAL  principal of the internal bootstrap identity (admin.bootstrap)
 *   UNIBUS_ROOM_MAX_* / UNIBUS_ROOM_CEILING_MAX_*  persisted-room quota defaults and ceilings (quota.ts)
 */
export const membershipEntry: ServiceEntry = kitServiceEntry(ServiceName.membership, (env) => {
  const sysIdentityPath = env[MembershipEnv.sysIdentity] || undefined;
  const bootstrapRaw = env[MembershipEnv.bootstrapPrincipal] || undefined;
  const quotas = loadRoomQuotaConfig(env);
  return async (nc, kit) => {
    const bootstrapPrincipal = bootstrapRaw === undefined ? undefined : normalisePrincipal(bootstrapRaw);
    let sys: NatsConnection | undefined;
    if (sysIdentityPath === undefined) {
      kit.logger?.warn({ op: "start" }, "UNIBUS_SYS_IDENTITY unset: revocations and membership changes cannot kick live connections");
    } else {
      const identity = await loadIdentityFile(sysIdentityPath);
      sys = await connect({
        servers: [...loadServiceConfig(env).servers],
        name: `${ServiceName.membership}-sys`,
        authenticator: nkeyAuthenticator(identity.signingKey),
        maxReconnectAttempts: -1,
        waitOnFirstConnect: true,
      });
    }
    const running = await createMembershipService(nc, {
      ...kit,
      quotas,
      ...(sys === undefined ? {} : { sys }),
      ...(bootstrapPrincipal === undefined ? {} : { bootstrapPrincipal }),
    });
    return {
      ...running,
      async stop() {
        await running.stop();
        await sys?.drain();
      },
    };
  };
});
