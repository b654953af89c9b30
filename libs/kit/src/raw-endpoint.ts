import { performance } from "node:perf_hooks";
import type { Service, ServiceMsg } from "@nats-io/services";
import type { Logger } from "pino";
import { EndpointStats } from "./endpoint-stats.js";
import { recordRequest } from "./metrics.js";

/** What a raw handler reports for the stats: `undefined` when it answered, else the failure's code and reason. */
export type RawOutcome = { readonly code: number; readonly reason: string } | undefined;

/** What a raw handler gets besides the message. */
export interface RawHandlerContext {
  /** Logger bound to the service and the endpoint (`svc`, `op`). */
  readonly logger: Logger;
}

/**
 * An endpoint whose request and reply are not the kit's JSON envelope but
 * another protocol that authenticates itself (nats-server's auth callout:
 * server-signed JWTs, optionally sealed with xkeys). The kit registers it in
 * the micro service, keeps its `$SRV.STATS` true (async time, `last_error`),
 * counts it in the request metrics, logs a handler that throws and answers it
 * with a 500; the handler itself answers on `msg` (it may answer later, as the
 * callout does when it holds back a refusal) and reports what it did.
 */
export interface RawEndpointSpec {
  /** Subject the endpoint listens on. */
  readonly subject: string;
  /** Name of the protocol spoken (micro metadata `protocol`), e.g. `nats-auth-callout`. */
  readonly protocol: string;
  /**
   * Only requests whose reply subject starts with this are handled; others
   * are dropped before any work (threat: whoever can publish on the subject
   * naming another subject as its reply, so the service's own rights publish
   * there). For the callout: the server's `$SYS._INBOX.`.
   */
  readonly replyPrefix: string;
  /** Extra micro metadata of the endpoint. */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Answers `msg` and reports the outcome; a throw is logged and answered with a 500. */
  handler(msg: ServiceMsg, ctx: RawHandlerContext): Promise<RawOutcome>;
}

/** Returns `spec` unchanged: gives a literal raw endpoint in a service table its type. */
export function rawEndpoint(spec: RawEndpointSpec): RawEndpointSpec {
  return spec;
}

/** What {@link addRawEndpoints} needs from the running service. */
export interface RawEndpointHost {
  readonly service: Service;
  /** The micro service name (metrics label). */
  readonly name: string;
  readonly logger: Logger;
  /** Per-endpoint stats, read by the service's `$SRV.STATS` handler. */
  readonly stats: Map<string, EndpointStats>;
  /** In-flight requests, awaited on stop. */
  readonly inflight: Set<Promise<void>>;
  /** Called for a request dropped because of its reply subject. */
  onDrop(reply: string | undefined): void;
}

/** Registers raw endpoints on a started micro service (see {@link RawEndpointSpec}). */
export function addRawEndpoints(host: RawEndpointHost, endpoints: Readonly<Record<string, RawEndpointSpec>>): void {
  for (const [name, spec] of Object.entries(endpoints)) {
    const logger = host.logger.child({ op: name });
    const handle = async (msg: ServiceMsg): Promise<void> => {
      if (msg.reply === undefined || !msg.reply.startsWith(spec.replyPrefix)) {
        host.onDrop(msg.reply);
        logger.debug({ reply: msg.reply ?? null }, "request whose reply subject is not the protocol's dropped");
        return;
      }
      const started = performance.now();
      let outcome: RawOutcome;
      try {
        outcome = await spec.handler(msg, { logger });
      } catch (err) {
        // Fail closed: the handler's answer is not known to be sound, so only a generic error goes out.
        logger.error({ err: err instanceof Error ? err.message : String(err) }, "handler failed");
        msg.respondError(500, "internal error");
        outcome = { code: 500, reason: "internal" };
      }
      const elapsed = performance.now() - started;
      host.stats.get(name)?.record(elapsed * 1e6, outcome);
      recordRequest(host.name, name, elapsed / 1000, outcome?.reason);
    };
    host.service.addEndpoint(name, {
      subject: spec.subject,
      metadata: { protocol: spec.protocol, ...spec.metadata },
      handler: (err, msg) => {
        if (err !== null) {
          logger.error({ err: err.message }, "endpoint subscription failed");
          return;
        }
        const p = handle(msg).finally(() => host.inflight.delete(p));
        host.inflight.add(p);
      },
    });
    host.stats.set(name, new EndpointStats(host.service, name));
  }
}
