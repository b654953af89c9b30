// A callout replica's directory and login lease in a process of its own,
// so a test can freeze it (SIGSTOP) and resume it. Not a test file: the
// paused-replica test spawns it. Config on stdin (a server URL, no secret).
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { pino } from "pino";
import { CalloutLeaseRunner, WatchedDirectory } from "@unibus/auth-callout";
import { CalloutLease, StoredBucket } from "@unibus/contracts";
import { controllableKv } from "@unibus/testing";

const chunks: Buffer[] = [];
for await (const c of process.stdin) chunks.push(c as Buffer);
const { url } = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { url: string };
const logger = pino({ level: "silent" });
const nc = await connect({ servers: url });
const kvm = new Kvm(nc);
const users = controllableKv(await kvm.open(StoredBucket.membership.users, { allow_direct: false }));
const rooms = await kvm.open(StoredBucket.membership.roomsByMember, { allow_direct: false });
const directory = await WatchedDirectory.start(users.kv, rooms, { logger });
const leases = await kvm.create(StoredBucket.authCallout.leases, { ttl: CalloutLease.recordTtlMs, allow_direct: false });
const lease = await CalloutLeaseRunner.start(nc, leases, directory, { logger });
// `lookup`: the principal's status as the directory answers it (or "refused"), and which path answered.
nc.subscribe("test.replica.lookup", {
  callback: (_err, msg) => {
    const principal = msg.string();
    const held = directory.stats.held;
    directory.lookup(principal).then(
      (e) => msg.respond(JSON.stringify({ status: e?.user.status ?? null, fromLease: directory.stats.held > held, leaseHeld: lease.keeper.current() !== undefined })),
      () => msg.respond(JSON.stringify({ status: "refused", fromLease: false, leaseHeld: lease.keeper.current() !== undefined })),
    );
  },
});
// `stall`: the users watch applies nothing more (a lagging copy), so only the lease could make it answer an old record.
nc.subscribe("test.replica.stall", {
  callback: (_err, msg) => {
    users.stall();
    msg.respond("ok");
  },
});
await nc.flush();
process.stdout.write("ready\n");
