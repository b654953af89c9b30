/**
 * The floor of P6 (bench/src/replica-handshake.ts): a gateway that does only
 * what the replica handshake cannot avoid, in the same process layout and on
 * the same connection setup as bench/src/gateway-service.ts. Two floors
 * answer on their own subjects, one process, measured in separate slices:
 *
 * - the protocol's floor (`FloorSubject`): at the hello a challenge nonce
 *   and the spec's MAC of it, then a fixed challenge of the real size; at
 *   the finish one Ed25519 verify of the dialer's signature over a
 *   transcript of the real size, both MACs and the transcript, the session
 *   id derived from it, and one acknowledged create-only put under that id
 *   in an R1 file bucket (the single-use check must be durable before the
 *   Ok), then the reply. The issue mandates those MACs and that record, so
 *   no conforming gateway does less. No JSON, hex or schema checks.
 * - the bare floor (`BareFloorSubject`), the floor before the MACs and the
 *   micro service were counted: the verify and the create under a random
 *   key only, answered on plain subscriptions. Printed beside the other,
 *   unchanged, so the changes of floor hide nothing.
 *
 * Both hash with the gateway's BLAKE3 (`Blake3Key`), so the floor is not
 * inflated by a slower hash than the real gateway uses.
 *
 *   tsx bench/src/floor-gateway.ts   (server URL in UNIBUS_URL)
 */
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { Svcm } from "@nats-io/services";
import { acceptorNonce, clusterIdFromName, prepareReplicaMacKey, randomBytes, REPLICA_HANDSHAKE_TTL_MS, ReplicaDirection, ReplicaWire, replicaMac, replicaProofs, replicaSessionId, toHex, verifyReplicaTranscript } from "@unibus/crypto";

/** `cpu` answers this process's CPU time (µs, user + system), as the real gateway's bench process does. */
export const FloorSubject = { hello: "bench.p6.floor.hello", finish: "bench.p6.floor.finish", cpu: "bench.p6.floor.cpu" } as const;

/** The bare floor's subjects (no MACs, no session id); its CPU is read on `FloorSubject.cpu`, around its own slices. */
export const BareFloorSubject = { hello: "bench.p6.floor.bare.hello", finish: "bench.p6.floor.bare.finish" } as const;

/** The ids the bench's handshakes carry: `node-<n>` (8 bytes up to node-999) and the gateway's `gw-bench`. */
const BENCH_ID_BYTES = 8;

/** Sizes of the real messages, so the floor moves the same bytes. */
export const FloorSize = {
  /** A binary ReplicaHello: version, cluster id, key id, nonce_d, then the replica id with its length byte. */
  hello: ReplicaWire.helloFixed + 1 + BENCH_ID_BYTES,
  /** An Ok binary ReplicaChallenge: version, status, nonce_a, mac_a, then the acceptor id with its length byte. */
  challenge: ReplicaWire.challengeHead + 32 + 32 + 1 + BENCH_ID_BYTES,
  /** A JSON session record as the real gateway stores it. */
  session: 200,
} as const;

const FLOOR_BUCKET = "bench_p6_floor_sessions";

/** The floor's micro service: its endpoints are named as the gateway's micro endpoints (`handshake-hello`, `handshake-finish`). */
const FloorService = { name: "replica-gateway-floor", version: "0.1.0", hello: "handshake-hello", finish: "handshake-finish" } as const;

const benchClusterId = clusterIdFromName("bench");

/** The binding the protocol's floor hashes: the real sizes, from the message's bytes (the values do not matter, the work does). */
export function floorBinding(nonceD: Uint8Array, nonceA: Uint8Array) {
  return { clusterId: benchClusterId, dialerId: "node-100", acceptorId: "gw-bench", nonceD, nonceA } as const;
}

/** Bytes of a finish the protocol's floor reads its nonces from: identity, signature and the start of the transcript. */
const MAC_FINISH_MIN = 96 + 124;

async function main(): Promise<void> {
  const nc = await connect({ servers: process.env.UNIBUS_URL ?? "", name: "bench-floor-gateway", noAsyncTraces: process.env.UNIBUS_BENCH_NO_ASYNC_TRACES === "1" });
  const kv = await new Kvm(nc).create(FLOOR_BUCKET, { replicas: 1, storage: "file", history: 1, ttl: 600_000 });
  const challenge = randomBytes(FloorSize.challenge);
  const session = randomBytes(FloorSize.session);
  const reply = { ok: new Uint8Array([0]), bad: new Uint8Array([1]) } as const;
  // A MAC key like the gateway's: derived and prepared once at start.
  const macKey = prepareReplicaMacKey(randomBytes(32));
  nc.subscribe(FloorSubject.cpu, {
    callback: (_err, msg) => {
      const u = process.cpuUsage();
      msg.respond(String(u.user + u.system));
    },
  });
  const create = (key: Uint8Array, respond: (b: Uint8Array) => boolean) =>
    kv.create(toHex(key), session).then(
      () => respond(reply.ok),
      () => respond(reply.bad),
    );
  // The library's default queue group, as the kit registers the gateway's endpoints.
  const service = await new Svcm(nc as unknown as ConstructorParameters<typeof Svcm>[0]).add({ name: FloorService.name, version: FloorService.version });
  service.addEndpoint(FloorService.hello, {
    subject: FloorSubject.hello,
    handler: (err, msg) => {
      if (err !== null) return;
      replicaMac(macKey, floorBinding(msg.data.subarray(0, 32), acceptorNonce(Date.now() + REPLICA_HANDSHAKE_TTL_MS)), ReplicaDirection.acceptorToDialer);
      msg.respond(challenge);
    },
  });
  service.addEndpoint(FloorService.finish, {
    subject: FloorSubject.finish,
    handler: (err, msg) => {
      if (err !== null) return;
      // finish = identity (32) ‖ signature (64) ‖ transcript
      const d = msg.data;
      if (d.length < MAC_FINISH_MIN || !verifyReplicaTranscript(d.subarray(0, 32), d.subarray(96), d.subarray(32, 96))) {
        msg.respond(reply.bad);
        return;
      }
      // The finish's work: mac_a and mac_d with the transcript, then the session id the record is stored under.
      const proofs = replicaProofs(macKey, floorBinding(d.subarray(96 + 60, 96 + 92), d.subarray(96 + 92, 96 + 124)), d.subarray(0, 32));
      void create(replicaSessionId(proofs.transcript), (b) => msg.respond(b));
    },
  });
  nc.subscribe(BareFloorSubject.hello, {
    callback: (_err, msg) => {
      msg.respond(challenge);
    },
  });
  nc.subscribe(BareFloorSubject.finish, {
    callback: (_err, msg) => {
      const d = msg.data;
      if (d.length < 96 || !verifyReplicaTranscript(d.subarray(0, 32), d.subarray(96), d.subarray(32, 96))) {
        msg.respond(reply.bad);
        return;
      }
      void create(randomBytes(16), (b) => msg.respond(b));
    },
  });
  await nc.flush();
  process.stdout.write("ready\n");
  process.once("SIGTERM", () => {
    void service
      .stop()
      .then(() => nc.close())
      .finally(() => process.exit(0));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
