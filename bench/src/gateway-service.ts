/**
 * The replica gateway as its own process for P6 (bench/src/replica-handshake.ts),
 * configured exactly as in production: from the environment (the PSK in
 * UNIBUS_REPLICA_PSK, never argv), server URL in UNIBUS_URL.
 *
 *   tsx bench/src/gateway-service.ts
 */
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { createReplicaGatewayService, loadGatewayConfig } from "@unibus/replica-gateway";

/** The bench asks here for this process's CPU time (µs, user + system) around its handshake slices. */
export const GATEWAY_CPU_SUBJECT = "bench.p6.gateway.cpu";

async function main(): Promise<void> {
  // UNIBUS_BENCH_NO_ASYNC_TRACES=1: the bench compares nats.js's noAsyncTraces on and off.
  const nc = await connect({ servers: process.env.UNIBUS_URL ?? "", name: "bench-gateway", noAsyncTraces: process.env.UNIBUS_BENCH_NO_ASYNC_TRACES === "1" });
  nc.subscribe(GATEWAY_CPU_SUBJECT, {
    callback: (_err, msg) => {
      const u = process.cpuUsage();
      msg.respond(String(u.user + u.system));
    },
  });
  const running = await createReplicaGatewayService(nc, { ...loadGatewayConfig(process.env), logger: pino({ level: "warn" }, pino.destination(2)) });
  // Its warnings go to stderr: stdout carries only the "ready" line the bench waits for.
  process.stdout.write("ready\n");
  process.on("SIGTERM", () => {
    void running
      .stop()
      .then(() => nc.close())
      .finally(() => process.exit(0));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
