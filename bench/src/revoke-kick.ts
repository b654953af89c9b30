/**
 * P5: revoke → disconnect. Time from the admin's `users.revoke` request being
 * sent to the revoked user's live connection reporting its disconnect, on a
 * real server with the auth callout, the membership service (which finds the
 * connection by connz and kicks it) and the callout service.
 *
 * raw, same run: a bare `$SYS.REQ.SERVER.<id>.KICK {"cid": N}` of a plain
 * nkey connection, timed the same way, so the ratio shows what unibus adds
 * (the revoke request, its checks and KV writes, the connz lookup).
 *
 *   npx tsx bench/src/revoke-kick.ts [--samples 40]
 *
 * The services run in the bench process: each sample is one request at a
 * time, so there is no load for them to steal CPU from, and the latency then
 * has no process hop the production setup would not have either.
 */
import { fileURLToPath } from "node:url";
import { connect as natsConnect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { pino } from "pino";
import { Subjects } from "@unibus/contracts";
import { NkeyPrefix, SigningKey, encodeNkeySeed, nkeyAuthenticator, randomBytes } from "@unibus/crypto";
import { KvPrincipalDirectory, calloutServerConfig, createAuthCalloutService, servicePermissions } from "@unibus/auth-callout";
import { MembershipBucket, SystemSubject, createMembershipService } from "@unibus/membership";
import type { RunningMembershipService } from "@unibus/membership";
import { connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { startTestServer } from "@unibus/testing";
import type { TestServer } from "@unibus/testing";
import { percentile, printCase } from "./report.js";
import type { BenchCase } from "./report.js";

const silent = pino({ level: "silent" });

/** A sample that takes longer than this is a failure, not a slow sample. */
const SAMPLE_TIMEOUT_MS = 5_000;

/**
 * Resolves when `nc` first reports a disconnect or closes. Subscribes to
 * status before the caller starts the kick so the event cannot be missed.
 */
function disconnected(nc: NatsConnection): { done: Promise<number>; stop: () => void } {
  const status = nc.status();
  let timer: NodeJS.Timeout | undefined;
  const stop = (): void => {
    clearTimeout(timer);
    (status as unknown as { stop(): void }).stop();
  };
  const done = new Promise<number>((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no disconnect within ${SAMPLE_TIMEOUT_MS} ms`)), SAMPLE_TIMEOUT_MS);
    // Either signal counts: the SDK reconnects (disconnect status), a plain
    // client with reconnect off may go straight to closed.
    void nc.closed().then(() => resolve(performance.now()));
    void (async () => {
      for await (const s of status) {
        if (s.type === "disconnect") {
          resolve(performance.now());
          return;
        }
      }
    })();
  }).finally(stop);
  return { done, stop };
}

/** Options of {@link runRevokeKick}. */
export interface RevokeKickOptions {
  /** Revokes to time (and as many raw kicks). */
  samples: number;
}

/** P5: p50 and p99 of revoke → disconnect against a raw system-account kick, same run. */
export async function runRevokeKick(opts: RevokeKickOptions): Promise<BenchCase[]> {
  const issuer = SigningKey.fromNkeySeed(encodeNkeySeed(NkeyPrefix.account, randomBytes(32)));
  const calloutUser = SigningKey.generate();
  const serviceUser = SigningKey.generate();
  const sysUser = SigningKey.generate();
  const bootKey = SigningKey.generate();
  const adminKey = SigningKey.generate();
  // The raw side's victim: an nkey user in the server config, so it skips the
  // callout and nothing unibus is on its path.
  const plainKey = SigningKey.generate();

  let server: TestServer | undefined;
  let svc: RunningMembershipService | undefined;
  const clients: UnibusClient[] = [];
  try {
    server = await startTestServer({
      config: calloutServerConfig({
        issuerAccountPublic: issuer.principal,
        calloutUserPublic: calloutUser.principal,
        systemUserPublic: sysUser.principal,
        serviceUsers: [
          {
            service: "membership",
            nkey: serviceUser.principal,
            permissions: servicePermissions({
              service: "membership",
              kvBuckets: [...Object.values(MembershipBucket), "nonces"],
              publish: ["$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.INFO.*", "unibus.room.*.membership"],
            }),
          },
          {
            service: "bootstrap",
            nkey: bootKey.principal,
            permissions: { publish: { allow: [Subjects.membership.adminBootstrap] }, subscribe: { allow: [`_INBOX.${bootKey.principal}.>`] } },
          },
          {
            service: "bench-plain",
            nkey: plainKey.principal,
            permissions: { publish: { allow: [`_INBOX.${plainKey.principal}.>`] }, subscribe: { allow: [`_INBOX.${plainKey.principal}.>`] } },
          },
        ],
      }),
    });
    const url = server.url;
    const nc = await server.connect({ authenticator: nkeyAuthenticator(serviceUser) });
    const sys = await server.connect({ authenticator: nkeyAuthenticator(sysUser) });
    // The production kicker, follow-up sweep included: that sweep runs 2.5 s
    // after each revoke, off the timed path, and is load production has too.
    svc = await createMembershipService(nc, { logger: silent, sys, bootstrapPrincipal: bootKey.principal });

    const calloutNc = await server.connect({ authenticator: nkeyAuthenticator(calloutUser), inboxPrefix: `_INBOX.${calloutUser.principal}` });
    const kvm = new Kvm(calloutNc);
    const directory = new KvPrincipalDirectory(await kvm.open(MembershipBucket.users), await kvm.open(MembershipBucket.roomsByMember));
    await createAuthCalloutService(calloutNc, { issuer, directory, logger: silent });

    const boot = await connect({ url, identity: bootKey });
    clients.push(boot);
    await boot.admin.bootstrap(adminKey.principal, "root");
    const admin = await connect({ url, identity: adminKey });
    clients.push(admin);

    const unibusSample = async (tag: string): Promise<number> => {
      const k = SigningKey.generate();
      await admin.users.add(k.principal, `p5-${tag}`, "member");
      const victim = await connect({ url, identity: k });
      try {
        const gone = disconnected(victim.nc);
        const t0 = performance.now();
        const reply = await admin.users.revoke(k.principal);
        if (reply.kick.kicked !== 1) {
          gone.stop();
          throw new Error(`revoke kicked ${JSON.stringify(reply.kick)}`);
        }
        return (await gone.done) - t0;
      } finally {
        // The SDK would keep retrying through the callout (denied each time).
        await victim.close();
      }
    };
    const rawSample = async (): Promise<number> => {
      const victim = await natsConnect({ servers: url, authenticator: nkeyAuthenticator(plainKey), inboxPrefix: `_INBOX.${plainKey.principal}`, reconnect: false });
      try {
        const { server_id: serverId, client_id: cid } = victim.info ?? {};
        if (serverId === undefined || cid === undefined) throw new Error("no server info on the raw victim");
        const gone = disconnected(victim);
        const t0 = performance.now();
        const reply = (await sys.request(SystemSubject.kick(serverId), JSON.stringify({ cid }), { timeout: SAMPLE_TIMEOUT_MS })).json<{ error?: unknown }>();
        if (reply.error !== undefined) {
          gone.stop();
          throw new Error(`raw kick refused: ${JSON.stringify(reply.error)}`);
        }
        return (await gone.done) - t0;
      } finally {
        await victim.close().catch(() => undefined);
      }
    };

    // Warm-up: JIT, KV buckets, key caches on both paths.
    for (let i = 0; i < 3; i++) {
      await unibusSample(`warm${i}`);
      await rawSample();
    }
    // Interleaved so both sides see the same machine load (the host is shared).
    const unibus: number[] = [];
    const raw: number[] = [];
    for (let i = 0; i < opts.samples; i++) {
      unibus.push(await unibusSample(String(i)));
      raw.push(await rawSample());
    }
    const name = `P5 revoke → disconnect (${opts.samples} samples)`;
    return [
      { name: `${name}, p50`, unit: "ms", unibus: percentile(unibus, 50), raw: percentile(raw, 50), lowerIsBetter: true },
      { name: `${name}, p99`, unit: "ms", unibus: percentile(unibus, 99), raw: percentile(raw, 99), lowerIsBetter: true, goal: "p99 < 1000 ms" },
    ];
  } finally {
    await Promise.allSettled(clients.map((c) => c.close()));
    await svc?.stop();
    await server?.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf("--samples");
  for (const c of await runRevokeKick({ samples: i > 0 ? Number(process.argv[i + 1]) : 40 })) printCase(c);
}
