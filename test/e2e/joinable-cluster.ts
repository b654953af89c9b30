// A running three-node cluster a fourth node can join the way an operator
// brings one in: the replica gateway in-process, the cluster initialised, and
// a temp dir holding what the node side reads (PSK, bus config, admin identity).
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { SigningKey, randomBytes, toHex, writeIdentityFile } from "@unibus/crypto";
import { createReplicaGatewayService } from "@unibus/replica-gateway";
import type { RunningReplicaGateway } from "@unibus/replica-gateway";
import { initCluster } from "@unibus/sdk";
import { startTestBus } from "@unibus/testbus";
import type { TestBus } from "@unibus/testbus";

/** What {@link startJoinableCluster} started; `stop()` ends it and removes `dir`. */
export interface JoinableCluster {
  readonly bus: TestBus;
  readonly gateway: RunningReplicaGateway;
  readonly psk: Uint8Array;
  /** Holds `psk` (hex), `bus.json` (the bus's authorization), both 0600, and `admin.id`. */
  readonly dir: string;
  /** The node-side CLI's environment: the admin's identity, the PSK file and the node home `<dir>/<nodeHome>`. */
  readonly env: NodeJS.ProcessEnv;
  readonly recoverySecret: string;
  stop(): Promise<void>;
}

/** Starts the cluster and the gateway; the dir is named after `prefix`, the node home inside it `nodeHome`. */
export async function startJoinableCluster(prefix: string, nodeHome: string): Promise<JoinableCluster> {
  const bus = await startTestBus({ nodes: 3, bootstrapAccess: true });
  let gateway: RunningReplicaGateway | undefined;
  let dir: string | undefined;
  const stop = async (): Promise<void> => {
    await gateway?.stop();
    await bus.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  };
  try {
    const psk = randomBytes(32);
    gateway = await createReplicaGatewayService(await bus.serviceConnection("replica-gateway"), {
      psk: { current: psk },
      clusterName: bus.cluster!.name,
      acceptorId: "gw-1",
      identity: SigningKey.generate(),
      bucketReplicas: 3,
      logger: pino({ level: "silent" }),
    });
    dir = await mkdtemp(join(tmpdir(), prefix));
    await writeFile(join(dir, "psk"), toHex(psk), { mode: 0o600 });
    await writeFile(join(dir, "bus.json"), JSON.stringify(bus.authorization), { mode: 0o600 });
    await writeIdentityFile(join(dir, "admin.id"), bus.adminIdentity);
    // The PSK comes from the file alone, whatever the runner's own environment holds.
    const env: NodeJS.ProcessEnv = { ...process.env, UNIBUS_URL: bus.cluster!.urls.join(","), UNIBUS_IDENTITY: join(dir, "admin.id"), UNIBUS_NODE_HOME: join(dir, nodeHome), UNIBUS_REPLICA_PSK_FILE: join(dir, "psk") };
    delete env["UNIBUS_REPLICA_PSK"];
    const { recoverySecret } = await initCluster(bus.admin.nc, bus.adminIdentity.signingKey, { clusterName: bus.cluster!.name });
    return { bus, gateway, psk, dir, env, recoverySecret, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
