/**
 * `npm run bench`: every benchmark, each printing the unibus figure, the raw
 * NATS figure measured in the same run, and their ratio.
 *
 *   npm run bench [-- [--seconds 3] [--samples 40] [--storm-clients 1000] [--in-process] [P0|P1|P1S|P2|P4|P5|P5C|P6|P8|P9|P12 ...]]
 *
 * `--in-process`: P4 runs membership and keys on the client's own event loop
 * (its older layout) instead of in their own process as `unibus up` does.
 *
 * Names after the options pick benchmarks (`npm run bench -- P1`); none runs all.
 */
import { runBlobs } from "./blobs.js";
import { runCalloutConnects } from "./callout-connects.js";
import { runDurability } from "./durability.js";
import { runE2eThroughput } from "./e2e-throughput.js";
import { runEmbeddedStack } from "./embedded-stack.js";
import { runIdleLatency } from "./idle-latency.js";
import { runKitVsRaw, runSignedBound } from "./kit-vs-raw.js";
import { runReconnectStorm } from "./reconnect-storm.js";
import { runRekey } from "./rekey.js";
import { runRoomLogins } from "./room-logins.js";
import { runReplicaHandshake } from "./replica-handshake.js";
import { printCase } from "./report.js";
import type { BenchCase } from "./report.js";
import { runRetryStorm } from "./retry-storm.js";
import { runRevokeKick, runRevokeKickCluster } from "./revoke-kick.js";
import { runScaling } from "./scaling.js";

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const i = args.indexOf(name);
  const v = i >= 0 ? Number(args[i + 1]) : fallback;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} wants a positive number`);
  return v;
};
const seconds = option("--seconds", 3);
const samples = option("--samples", 40);
// The storm is 1,000 clients; fewer (`--storm-clients 200`) if a run cannot hold them.
const stormClients = option("--storm-clients", 1_000);
/** Options that take no value, so the name after one is a benchmark's. */
const FLAGS: readonly string[] = ["--in-process"];
const inProcess = args.includes("--in-process");
const filters = args.filter((a, i) => !a.startsWith("--") && !(args[i - 1]?.startsWith("--") && !FLAGS.includes(args[i - 1] ?? ""))).map((f) => f.toUpperCase());

interface Bench {
  id: string;
  /** What the raw column is, printed once above the cases. */
  about: string;
  run: () => Promise<BenchCase[]>;
}

const benches: Bench[] = [
  {
    id: "P0",
    about: "kit endpoint vs raw @nats-io/services echo, same server",
    run: () => runKitVsRaw({ seconds, inFlight: 64 }),
  },
  {
    id: "P2",
    about: "signed requests at the crypto limit: kit endpoint vs a raw echo that verifies the one Ed25519 envelope signature (and vs the bare echo); each service its own process, interleaved slices",
    run: () => runSignedBound({ seconds, inFlight: 64 }),
  },
  {
    id: "P1",
    about: "connects through the auth callout (child process) vs plain nkey connects on a server without callout, and vs the floor (a do-nothing callout in the same layout that only signs the user JWT and the response); interleaved slices",
    // Sequential, so the two callout servers never compete for the CPU.
    run: async () => [...(await runCalloutConnects({ seconds, concurrency: 32, xkey: false })), ...(await runCalloutConnects({ seconds, concurrency: 32, xkey: true }))],
  },
  {
    id: "P1S",
    about: `reconnect storm: ${stormClients} clients (own principals, SDK reconnect settings) connected through the callout; server restarted; time from the old server gone to the last client back vs the same with plain nkey users and no callout (both servers with JetStream); ratio = plain ÷ callout, median of 3`,
    run: () => runReconnectStorm({ clients: stormClients, runs: 3 }),
  },
  { id: "P3", about: "e2e room 1 KB messages (coalesced frames) vs raw pub/sub, separate processes; idle-room latency", run: () => runE2eThroughput({ seconds }) },
  { id: "P4", about: "rekey of a 1,000-member room (seal 1,000 shares, sign once, one durable record) vs 1,000 sequential raw KV puts; membership and keys in one process of their own as `unibus up` runs them (--in-process: on the client's event loop)", run: () => runRekey({ members: 1_000, inProcess }) },
  {
    id: "P8",
    about: "idle-room latency: one 1 KB message at a time, SDK encrypt + sign → server → SDK verify + decrypt vs a raw publish → subscriber on the same connections; interleaved",
    run: () => runIdleLatency({ samples: 2_000 }),
  },
  {
    id: "P9",
    about: "blobs, 64 MiB: SDK upload/download (client-side encryption, signed chunk requests, the service in its own process) vs raw Object Store put/get of the same bytes; interleaved rounds",
    run: () => runBlobs({ mib: 64, rounds: 2 }),
  },
  {
    id: "P5",
    about: `users.revoke sent → victim disconnected vs a bare $SYS KICK of a plain connection; ${samples} samples each, interleaved`,
    run: () => runRevokeKick({ samples }),
  },
  {
    id: "P5C",
    about: "P5 on a local 3-node cluster (TLS routes): users.revoke sent → the victim's connections on all 3 nodes closed vs bare $SYS KICKs on each node; then 5 s of the victim reconnecting, each admitted login a re-admission (goal 0)",
    run: async () => {
      const { cases, readmissions, refusedLogins } = await runRevokeKickCluster({ samples: Math.min(samples, 20) });
      console.log(`P5C re-admissions within 5 s of a revoke: ${readmissions} (goal 0; ${refusedLogins} reconnects refused)`);
      if (readmissions > 0) process.exitCode = 1;
      return cases;
    },
  },
  {
    id: "P6",
    about: "full replica PSK handshakes (hello + finish, MACs, Ed25519, one create-only session write as the single use; gateway in its own process) vs raw request/reply round trips",
    run: () => runReplicaHandshake({ seconds, inFlight: 16, warmupSeconds: 2 }),
  },
  { id: "P7", about: "CPU-bound kit echo (+2,000 PBKDF2 iterations per request): 2 replica processes (one queue group) vs 1 in interleaved slices, same server; 2 cores shared with nats-server and the client; the machine's own 2-thread bound beside it", run: () => runScaling({ seconds, inFlight: 64 }) },
  {
    id: "P12",
    about: "a principal in many rooms: login p50 through the callout (sequential, interleaved) at 1,000 rooms vs at 1 room, and at 5,000 (must log in); the login JWT and callout reply sizes",
    run: async () => {
      const { cases, notes } = await runRoomLogins({ samples: 60 });
      for (const n of notes) console.log(n);
      return cases;
    },
  },
  {
    id: "P13",
    about:
      "retry storm: legitimate connects/s (4 in flight, through the callout) with 200 revoked clients reconnecting in a tight loop (own process) vs without, interleaved slices; " +
      "then callout CPU per refusal answered from the denial cache vs one fully checked (raw column), in-process",
    run: () => runRetryStorm({ seconds }),
  },
  {
    id: "P10",
    about: "acknowledged means on disk: R3 KV puts with sync_interval always vs the server default (two 3-node clusters, interleaved slices); room 1 KB publishes stored by an R3 vs an R1 stream (R1 both always and default)",
    run: () => runDurability({ seconds }),
  },
  {
    id: "P11",
    about: "the embedded default (`unibus up`: nats-server, watchdog, services) after every service answers: RSS of the whole process tree vs nats-server alone; restart on the same state dir to every service answering vs to nats-server ready",
    run: () => runEmbeddedStack({ settleMs: 3_000 }),
  },
];

const picked = benches.filter((b) => filters.length === 0 || filters.some((f) => b.id.startsWith(f)));
if (picked.length === 0) throw new Error(`no benchmark matches ${filters.join(", ")}; known: ${benches.map((b) => b.id).join(", ")}`);

console.log(`unibus bench: ${seconds} s per case; ratios are against raw NATS in this same run\n`);
for (const b of picked) {
  console.log(`${b.id}: ${b.about}`);
  for (const c of await b.run()) printCase(c);
  console.log();
}
