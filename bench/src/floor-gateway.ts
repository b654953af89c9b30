/**
 * The floor of P6 (bench/src/replica-handshake.ts): a gateway that does only
 * what the replica handshake cannot avoid, in the same process layout and on
 * the same connection setup as bench/src/gateway-service.ts. A hello gets a
 * fixed challenge of the real one's size; a finish gets one Ed25519 verify of
 * the dialer's signature over a transcript of the real size and one
 * acknowledged create-only put on a fresh key in an R1 file bucket (the
 * single-use check must be durable before the Ok), then the reply. No MACs,
 * no JSON, no schema checks: the real gateway cannot beat this.
 *
 * With UNIBUS_BENCH_FLOOR_MACS=1 it also does the spec's BLAKE3 work: the
 * MAC of the challenge at the hello, both MACs and the session id at the
 * finish (the session id is then the record's key), so the bench can show
 * how much of the gap to the real gateway is the protocol's own MACs.
 *
 *   tsx bench/src/floor-gateway.ts   (server URL in UNIBUS_URL)
 */
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { clusterIdFromName, prepareReplicaMacKey, randomBytes, ReplicaDirection, replicaMac, replicaProofs, replicaSessionId, toHex, verifyReplicaTranscript } from "@unibus/crypto";

/** `cpu` answers this process's CPU time (µs, user + system), as the real gateway's bench process does. */
export const FloorSubject = { hello: "bench.p6.floor.hello", finish: "bench.p6.floor.finish", cpu: "bench.p6.floor.cpu" } as const;

/** Sizes of the real messages, so the floor moves the same bytes. */
export const FloorSize = {
  /** A JSON ReplicaHello: version, cluster id, replica id, key id and nonce_d in hex. */
  hello: 250,
  /** A JSON ReplicaChallenge: status, acceptor id, nonce_a and mac_a in hex. */
  challenge: 180,
  /** A JSON session record as the real gateway stores it. */
  session: 200,
} as const;

const FLOOR_BUCKET = "bench_p6_floor_sessions";

/** Set to "1": the floor also computes the spec's MACs and session id (see the header). */
export const FLOOR_MACS_ENV = "UNIBUS_BENCH_FLOOR_MACS";

const benchClusterId = clusterIdFromName("bench");

/** The binding the MAC-computing floor hashes: the real sizes, from the message's bytes (the values do not matter, the work does). */
export function floorBinding(nonceD: Uint8Array, nonceA: Uint8Array) {
  return { clusterId: benchClusterId, dialerId: "node-100", acceptorId: "gw-bench", nonceD, nonceA } as const;
}

/** Bytes of a finish the MAC-computing floor reads its nonces from: identity, signature and the start of the transcript. */
const MAC_FINISH_MIN = 96 + 124;

async function main(): Promise<void> {
  const nc = await connect({ servers: process.env.UNIBUS_URL ?? "", name: "bench-floor-gateway", noAsyncTraces: process.env.UNIBUS_BENCH_NO_ASYNC_TRACES === "1" });
  const kv = await new Kvm(nc).create(FLOOR_BUCKET, { replicas: 1, storage: "file", history: 1, ttl: 600_000 });
  const challenge = randomBytes(FloorSize.challenge);
  const session = randomBytes(FloorSize.session);
  const reply = { ok: new Uint8Array([0]), bad: new Uint8Array([1]) } as const;
  // A MAC key like the gateway's: derived and prepared once at start.
  const macKey = process.env[FLOOR_MACS_ENV] === "1" ? prepareReplicaMacKey(randomBytes(32)) : undefined;
  nc.subscribe(FloorSubject.cpu, {
    callback: (_err, msg) => {
      const u = process.cpuUsage();
      msg.respond(String(u.user + u.system));
    },
  });
  nc.subscribe(FloorSubject.hello, {
    callback: (_err, msg) => {
      if (macKey !== undefined) replicaMac(macKey, floorBinding(msg.data.subarray(0, 32), randomBytes(32)), ReplicaDirection.acceptorToDialer);
      msg.respond(challenge);
    },
  });
  nc.subscribe(FloorSubject.finish, {
    callback: (_err, msg) => {
      // finish = identity (32) ‖ signature (64) ‖ transcript
      const d = msg.data;
      if (d.length < (macKey === undefined ? 96 : MAC_FINISH_MIN) || !verifyReplicaTranscript(d.subarray(0, 32), d.subarray(96), d.subarray(32, 96))) {
        msg.respond(reply.bad);
        return;
      }
      let key: Uint8Array;
      if (macKey === undefined) key = randomBytes(16);
      else {
        // The finish's work: mac_a and mac_d with the transcript, then the session id the record is stored under.
        const proofs = replicaProofs(macKey, floorBinding(d.subarray(96 + 60, 96 + 92), d.subarray(96 + 92, 96 + 124)), d.subarray(0, 32));
        key = replicaSessionId(proofs.transcript);
      }
      kv.create(toHex(key), session).then(
        () => msg.respond(reply.ok),
        () => msg.respond(reply.bad),
      );
    },
  });
  await nc.flush();
  process.stdout.write("ready\n");
  process.once("SIGTERM", () => {
    void nc.close().finally(() => process.exit(0));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
