import { createServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";

/** The HTTP paths healthz serves. */
export const HealthPath = {
  /** The process runs: always cheap, never touches NATS. */
  livez: "/livez",
  /** Every readiness check passed: 200, else 503. */
  readyz: "/readyz",
  /** The posture document; 200 when ready, else 503. */
  healthz: "/healthz",
  /** Every service instance's metrics, Prometheus text format. */
  metrics: "/metrics",
} as const;

/** What the HTTP server answers with; each call does its own bounded work. */
export interface HealthHandlers {
  readiness(): Promise<{ ready: boolean; body: unknown }>;
  posture(): Promise<{ ready: boolean; body: unknown }>;
  metrics(): Promise<{ contentType: string; text: string }>;
}

/** A running health HTTP server. */
export interface HealthHttpServer {
  /** `http://host:port`, the port actually bound (port 0 picks one). */
  readonly url: string;
  close(): Promise<void>;
}

/** Where to listen: `host:port`, e.g. `127.0.0.1:0` or `0.0.0.0:8080`. */
export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/**
 * Parses `UNIBUS_HEALTHZ_LISTEN` (`host:port`, IPv6 in brackets).
 *
 * @throws RangeError naming the bad value.
 */
export function parseListenAddress(raw: string): ListenAddress {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/.exec(raw.trim());
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || m[1] === undefined || !Number.isInteger(port) || port > 65_535) throw new RangeError(`listen address must be host:port, got ${JSON.stringify(raw)}`);
  return { host: m[1].replace(/^\[|\]$/g, ""), port };
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { "content-type": contentType, "cache-control": "no-store" });
  res.end(body);
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  send(res, status, "application/json; charset=utf-8", `${JSON.stringify(body, null, 2)}\n`);
}

/**
 * Serves {@link HealthPath}. GET and HEAD only; anything else is 405, an
 * unknown path 404. A handler that throws answers 503 (fail closed: a probe
 * that cannot tell is not ready), with the cause in the log only.
 */
export async function startHealthHttp(listen: ListenAddress, handlers: HealthHandlers, logger: Logger): Promise<HealthHttpServer> {
  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? "/", "http://localhost").pathname;
    if (req.method !== "GET" && req.method !== "HEAD") return send(res, 405, "text/plain", "method not allowed\n");
    switch (path) {
      case HealthPath.livez:
        return send(res, 200, "text/plain", "ok\n");
      case HealthPath.readyz: {
        const r = await handlers.readiness();
        return sendJson(res, r.ready ? 200 : 503, r.body);
      }
      case HealthPath.healthz: {
        const r = await handlers.posture();
        return sendJson(res, r.ready ? 200 : 503, r.body);
      }
      case HealthPath.metrics: {
        const m = await handlers.metrics();
        return send(res, 200, m.contentType, m.text);
      }
      default:
        return send(res, 404, "text/plain", "not found\n");
    }
  };
  const server: Server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      logger.error({ op: "http", path: req.url, err: err instanceof Error ? err.message : String(err) }, "health request failed");
      if (!res.headersSent) sendJson(res, 503, { ready: false, error: "check failed" });
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
