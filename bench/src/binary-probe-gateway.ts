/**
 * A design probe for P6 (bench/src/replica-handshake.ts `--binary-probe`),
 * not a wire format unibus speaks: the replica handshake's own checks and
 * cryptography on fixed binary messages, served as kit raw endpoints, to
 * measure how much of the gateway's gap to the floor a binary layout of
 * hello, challenge and finish would close before anyone changes the spec.
 *
 * Same as the gateway (services/replica-gateway/src/handlers/handshake.ts):
 * version, cluster id, directional rule, key id → prepared MAC key (current
 * and previous PSK), the expiry carried in `nonce_a`, `mac_a` at the hello;
 * `mac_d` compared in constant time, the Ed25519 check of the transcript, the
 * session id from it, the session record as the same JSON under that id by
 * one create-only write before the Ok, at the finish. Same process layout
 * (a micro service through the kit's `startService`, so its stats, metrics
 * and reply rule) and connection setup. What it leaves out is exactly what a
 * binary layout would drop: the JSON bodies, their schema checks, the hex,
 * and the session record in the finish's reply (the dialer gets the session
 * id, which it checks against its own, and the creation time).
 *
 * Layout (sizes in bytes; ids are 1–63 bytes of `[a-z0-9._-]`, length-prefixed):
 *   hello     version 1 ‖ cluster id 16 ‖ key id 8 ‖ nonce_d 32 ‖ len 1 ‖ replica id
 *   challenge status 1 ‖ nonce_a 32 ‖ mac_a 32 ‖ len 1 ‖ acceptor id   (status only when not Ok)
 *   finish    cluster id 16 ‖ key id 8 ‖ nonce_d 32 ‖ nonce_a 32 ‖ identity 32 ‖ mac_d 32 ‖ signature 64 ‖ len 1 ‖ replica id ‖ len 1 ‖ acceptor id
 *   reply     status 1 ‖ session id 16 ‖ created at 8 (u64 ms, big-endian)   (status only when not Ok)
 *
 *   tsx bench/src/binary-probe-gateway.ts   (server URL in UNIBUS_URL, PSK in UNIBUS_REPLICA_PSK, cluster in UNIBUS_CLUSTER_NAME)
 */
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import type { ServiceMsg } from "@nats-io/services";
import { pino } from "pino";
import {
  acceptorNonce,
  acceptorNonceExpiry,
  acceptorNonceLive,
  clusterIdFromName,
  constantTimeEqual,
  macMatches,
  prepareReplicaMacKey,
  principalFromPublicKey,
  REPLICA_HANDSHAKE_TTL_MS,
  REPLICA_HANDSHAKE_VERSION,
  REPLICA_ID_PATTERN,
  ReplicaDirection,
  ReplicaHandshakeStatus,
  replicaKeyId,
  replicaMac,
  replicaMacKey,
  replicaProofs,
  replicaSessionId,
  toHex,
  verifyReplicaTranscript,
} from "@unibus/crypto";
import type { Blake3Key } from "@unibus/crypto";
import { defineService, openBuckets, serviceJetStream, startService } from "@unibus/kit";
import type { RawOutcome } from "@unibus/kit";
import { loadGatewayConfig, ReplicaBucket, SESSION_TTL_MS } from "@unibus/replica-gateway";

/** `cpu` answers this process's CPU time (µs, user + system), as the gateway's and the floor's do. */
export const ProbeSubject = { hello: "bench.p6.probe.hello", finish: "bench.p6.probe.finish", cpu: "bench.p6.probe.cpu" } as const;

/** Byte offsets of the probe's messages. */
export const ProbeLayout = {
  helloFixed: 1 + 16 + 8 + 32,
  finishFixed: 16 + 8 + 32 + 32 + 32 + 32 + 64,
  challengeFixed: 1 + 32 + 32,
  reply: 1 + 16 + 8,
} as const;

const PROBE_BUCKET = "bench_p6_probe_sessions";
const MALFORMED: RawOutcome = { code: 400, reason: "malformed" };
const latin1 = new TextDecoder("latin1");

/** A length-prefixed id at `at`, checked like the JSON schema checks it; undefined if malformed. */
function idAt(d: Uint8Array, at: number): { id: string; end: number } | undefined {
  const n = d[at];
  if (n === undefined || n < 1 || n > 63 || at + 1 + n > d.length) return undefined;
  const id = latin1.decode(d.subarray(at + 1, at + 1 + n));
  return REPLICA_ID_PATTERN.test(id) ? { id, end: at + 1 + n } : undefined;
}

async function main(): Promise<void> {
  const config = loadGatewayConfig(process.env);
  const nc = await connect({ servers: process.env.UNIBUS_URL ?? "", name: "bench-binary-probe", noAsyncTraces: process.env.UNIBUS_BENCH_NO_ASYNC_TRACES === "1" });
  nc.subscribe(ProbeSubject.cpu, {
    callback: (_err, msg) => {
      const u = process.cpuUsage();
      msg.respond(String(u.user + u.system));
    },
  });
  const logger = pino({ level: "warn" }, pino.destination(2));
  const kv = await openBuckets(serviceJetStream(nc), [{ ...ReplicaBucket.sessions, name: PROBE_BUCKET, replicas: 1 }], { budgetMs: 30_000, logger });
  const sessions = kv[PROBE_BUCKET];
  if (sessions === undefined || config.psk === undefined || config.clusterName === undefined) throw new Error("probe needs a PSK and a cluster name");
  const clusterId = clusterIdFromName(config.clusterName);
  const clusterIdHex = toHex(clusterId);
  const acceptorId = config.acceptorId ?? "replica-gateway";
  const acceptorIdBytes = new TextEncoder().encode(acceptorId);
  const slots = new Map<string, Blake3Key>();
  for (const psk of [config.psk.current, config.psk.previous]) if (psk !== undefined) slots.set(toHex(replicaKeyId(psk)), prepareReplicaMacKey(replicaMacKey(psk)));
  const refuse = (msg: ServiceMsg, status: number, outcome?: RawOutcome): RawOutcome => {
    msg.respond(new Uint8Array([status]));
    return outcome;
  };

  const hello = (msg: ServiceMsg): Promise<RawOutcome> => {
    const d = msg.data;
    if (d.length < ProbeLayout.helloFixed + 2 || d.length > ProbeLayout.helloFixed + 64) return Promise.resolve(refuse(msg, ReplicaHandshakeStatus.UnknownCommand, MALFORMED));
    if (d[0] !== REPLICA_HANDSHAKE_VERSION) return Promise.resolve(refuse(msg, ReplicaHandshakeStatus.UnknownCommand));
    const dialer = idAt(d, ProbeLayout.helloFixed);
    if (dialer === undefined || dialer.end !== d.length) return Promise.resolve(refuse(msg, ReplicaHandshakeStatus.UnknownCommand, MALFORMED));
    if (!constantTimeEqual(d.subarray(1, 17), clusterId)) return Promise.resolve(refuse(msg, ReplicaHandshakeStatus.ClusterMismatch));
    if (dialer.id === acceptorId) return Promise.resolve(refuse(msg, ReplicaHandshakeStatus.DirectionalRule));
    const macKey = slots.get(toHex(d.subarray(17, 25)));
    if (macKey === undefined) return Promise.resolve(refuse(msg, ReplicaHandshakeStatus.MacMismatch));
    const nonceA = acceptorNonce(Date.now() + REPLICA_HANDSHAKE_TTL_MS);
    const macA = replicaMac(macKey, { clusterId, dialerId: dialer.id, acceptorId, nonceD: d.subarray(25, 57), nonceA }, ReplicaDirection.acceptorToDialer);
    const out = new Uint8Array(ProbeLayout.challengeFixed + 1 + acceptorIdBytes.length);
    out[0] = ReplicaHandshakeStatus.Ok;
    out.set(nonceA, 1);
    out.set(macA, 33);
    out[65] = acceptorIdBytes.length;
    out.set(acceptorIdBytes, 66);
    msg.respond(out);
    return Promise.resolve(undefined);
  };

  const finish = async (msg: ServiceMsg): Promise<RawOutcome> => {
    const d = msg.data;
    const fixed = ProbeLayout.finishFixed;
    if (d.length < fixed + 4 || d.length > fixed + 128) return refuse(msg, ReplicaHandshakeStatus.UnknownCommand, MALFORMED);
    const dialer = idAt(d, fixed);
    const acceptor = dialer === undefined ? undefined : idAt(d, dialer.end);
    if (dialer === undefined || acceptor === undefined || acceptor.end !== d.length) return refuse(msg, ReplicaHandshakeStatus.UnknownCommand, MALFORMED);
    if (!constantTimeEqual(d.subarray(0, 16), clusterId)) return refuse(msg, ReplicaHandshakeStatus.ClusterMismatch);
    if (dialer.id === acceptor.id) return refuse(msg, ReplicaHandshakeStatus.DirectionalRule);
    const nonceA = d.subarray(56, 88);
    if (!acceptorNonceLive(acceptorNonceExpiry(nonceA), Date.now())) return refuse(msg, ReplicaHandshakeStatus.Expired);
    const macKey = slots.get(toHex(d.subarray(16, 24)));
    if (macKey === undefined) return refuse(msg, ReplicaHandshakeStatus.MacMismatch);
    const identity = d.subarray(88, 120);
    const { macD, transcript } = replicaProofs(macKey, { clusterId, dialerId: dialer.id, acceptorId: acceptor.id, nonceD: d.subarray(24, 56), nonceA }, identity);
    if (!macMatches(macD, d.subarray(120, 152))) return refuse(msg, ReplicaHandshakeStatus.MacMismatch);
    if (!verifyReplicaTranscript(identity, transcript, d.subarray(152, 216))) return refuse(msg, ReplicaHandshakeStatus.AuthRequired);
    const now = Date.now();
    const sessionId = replicaSessionId(transcript);
    // The record the gateway stores, field for field.
    const record = {
      sessionId: toHex(sessionId),
      clusterId: clusterIdHex,
      replicaId: dialer.id,
      acceptorId: acceptor.id,
      principal: principalFromPublicKey(identity),
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + SESSION_TTL_MS).toISOString(),
    };
    try {
      await sessions.create(record.sessionId, JSON.stringify(record));
    } catch {
      return refuse(msg, ReplicaHandshakeStatus.Expired);
    }
    const out = new Uint8Array(ProbeLayout.reply);
    out[0] = ReplicaHandshakeStatus.Ok;
    out.set(sessionId, 1);
    new DataView(out.buffer).setBigUint64(17, BigInt(now));
    msg.respond(out);
    return undefined;
  };

  const running = await startService(
    nc,
    defineService({
      name: "replica-gateway-probe",
      version: "0.1.0",
      description: "P6 design probe: the handshake on fixed binary messages",
      endpoints: {},
      raw: {
        "handshake-hello": { subject: ProbeSubject.hello, protocol: "p6-binary-probe", replyPrefix: "_INBOX.", handler: hello },
        "handshake-finish": { subject: ProbeSubject.finish, protocol: "p6-binary-probe", replyPrefix: "_INBOX.", handler: finish },
      },
    }),
    { logger },
  );
  process.stdout.write("ready\n");
  process.once("SIGTERM", () => {
    void running
      .stop()
      .then(() => nc.close())
      .finally(() => process.exit(0));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
