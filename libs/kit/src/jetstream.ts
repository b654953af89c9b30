import { jetstream } from "@nats-io/jetstream";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";

/**
 * How long a service waits for one JetStream API call (KV get/put, stream
 * info). Well below a client's default request timeout (5 s): a bucket whose
 * stream has no leader (an election, or the node holding its only replica
 * gone) never answers a leader read, and with the JetStream default of 5 s
 * the service's coded 503 arrived just after the client had given up, so the
 * client saw silence ("did not answer in time") instead of a refusal it can
 * retry on.
 */
export const ServiceJetStream = { timeoutMs: 3_000 } as const;

/** The JetStream client a service reads and writes its buckets through, with {@link ServiceJetStream}'s bound. */
export function serviceJetStream(nc: NatsConnection): JetStreamClient {
  return jetstream(nc, { timeout: ServiceJetStream.timeoutMs });
}
