/**
 * The replica gateway as its own process for P6 (bench/src/replica-handshake.ts),
 * configured exactly as in production: from the environment (the PSK in
 * UNIBUS_REPLICA_PSK, never argv), server URL in UNIBUS_URL.
 *
 *   tsx bench/src/gateway-service.ts
 */
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { createReplicaGatewayService, loadGatewayConfig } from "@unibus/replica-gateway";

const nc = await connect({ servers: process.env.UNIBUS_URL ?? "", name: "bench-gateway" });
const running = await createReplicaGatewayService(nc, { ...loadGatewayConfig(process.env), logger: pino({ level: "warn" }, pino.destination(2)) });
// Its warnings go to stderr: stdout carries only the "ready" line the bench waits for.
process.stdout.write("ready\n");
process.on("SIGTERM", () => {
  void running
    .stop()
    .then(() => nc.close())
    .finally(() => process.exit(0));
});
