/**
 * The blobs service as its own process for P9 (bench/src/blobs.ts), as it
 * runs in production: its own connection, server URL in UNIBUS_URL, the size
 * limit in UNIBUS_BLOBS_MAX_BYTES.
 *
 *   tsx bench/src/blobs-service.ts
 */
import { connect } from "@nats-io/transport-node";
import { pino } from "pino";
import { createBlobsService } from "@unibus/blobs";

const nc = await connect({ servers: process.env.UNIBUS_URL ?? "", name: "bench-blobs" });
const running = await createBlobsService(nc, { logger: pino({ level: "warn" }), maxBlobBytes: Number(process.env.UNIBUS_BLOBS_MAX_BYTES ?? "0") });
process.stdout.write("ready\n");
process.on("SIGTERM", () => {
  void running
    .stop()
    .then(() => nc.close())
    .finally(() => process.exit(0));
});
