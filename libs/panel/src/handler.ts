import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { fileURLToPath } from "node:url";

/** Where `npm run panel:build` writes the bundle. */
export const PANEL_DIST_DIR = fileURLToPath(new URL("../dist/", import.meta.url));

/** Options of {@link createPanelHandler}. */
export interface PanelHandlerOptions {
  /** The built bundle (default {@link PANEL_DIST_DIR}). */
  readonly distDir?: string;
  /** URL path the panel lives under, with a trailing slash (default `/panel/`). */
  readonly prefix?: string;
  /** The bus's NATS WebSocket URL, offered to the browser as the default (`UNIBUS_WS_URL`). */
  readonly wsUrl?: string;
}

/** A request handler: true when it answered, false when the path is not the panel's. */
export type PanelHandler = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
};

// Only flat, plain file names from the bundle: a path such as `../../secrets`
// or `%2e%2e/` never reaches the file system.
const FILE_NAME = /^[a-z0-9][a-z0-9.-]*\.(html|js|css)$/;
const CONFIG_FILE = "panel-config.json";

/**
 * The Content-Security-Policy of every panel response. Scripts and styles
 * only from the panel itself (no inline script, so an injected string
 * cannot run), and connections only back to itself and to a loopback
 * WebSocket (plus the configured bus URL): a compromised page cannot send
 * the admin's signatures anywhere else.
 */
export function panelContentSecurityPolicy(wsUrl?: string): string {
  const connect = ["'self'", "ws://127.0.0.1:*", "ws://localhost:*", "wss://127.0.0.1:*", "wss://localhost:*"];
  if (wsUrl !== undefined) {
    const origin = new URL(wsUrl).origin;
    if (!connect.includes(origin) && /^wss?:\/\//.test(origin)) connect.push(origin);
  }
  return [
    "default-src 'self'",
    `connect-src ${connect.join(" ")}`,
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

function securityHeaders(res: ServerResponse, csp: string): void {
  res.setHeader("Content-Security-Policy", csp);
  res.setHeader("X-Content-Type-Options", "nosniff");
  res.setHeader("X-Frame-Options", "DENY");
  res.setHeader("Referrer-Policy", "no-referrer");
  res.setHeader("Cross-Origin-Opener-Policy", "same-origin");
  res.setHeader("Cross-Origin-Resource-Policy", "same-origin");
  res.setHeader("Cache-Control", "no-store");
}

function send(res: ServerResponse, status: number, type: string, body: string | Uint8Array, head: boolean): void {
  res.statusCode = status;
  res.setHeader("Content-Type", type);
  res.setHeader("Content-Length", typeof body === "string" ? Buffer.byteLength(body) : body.byteLength);
  res.end(head ? undefined : body);
}

/**
 * Serves the static admin panel from its built bundle under `prefix`. It
 * has no API of its own: the browser talks to the bus over NATS WebSocket
 * and signs every request itself, so mounting this in any HTTP server adds
 * no backend and no credentials to it.
 */
export function createPanelHandler(opts: PanelHandlerOptions = {}): PanelHandler {
  const dist = opts.distDir ?? PANEL_DIST_DIR;
  const prefix = opts.prefix ?? "/panel/";
  if (!prefix.startsWith("/") || !prefix.endsWith("/")) throw new TypeError("createPanelHandler: prefix must start and end with /");
  const csp = panelContentSecurityPolicy(opts.wsUrl);
  const config = JSON.stringify(opts.wsUrl === undefined ? {} : { wsUrl: opts.wsUrl });
  return async (req, res) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    if (path === prefix.slice(0, -1)) {
      securityHeaders(res, csp);
      res.statusCode = 308;
      res.setHeader("Location", prefix);
      res.end();
      return true;
    }
    if (!path.startsWith(prefix)) return false;
    securityHeaders(res, csp);
    const head = req.method === "HEAD";
    if (req.method !== "GET" && !head) {
      res.setHeader("Allow", "GET, HEAD");
      send(res, 405, "text/plain; charset=utf-8", "method not allowed\n", head);
      return true;
    }
    const name = path.slice(prefix.length) || "index.html";
    if (name === CONFIG_FILE) {
      send(res, 200, CONTENT_TYPES[".json"] ?? "application/json", config, head);
      return true;
    }
    if (!FILE_NAME.test(name)) {
      send(res, 404, "text/plain; charset=utf-8", "not found\n", head);
      return true;
    }
    let body: Uint8Array;
    try {
      body = await readFile(`${dist}/${name}`);
    } catch (err) {
      const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
      const text = missing && name === "index.html" ? "the admin panel is not built: run `npm run panel:build`\n" : "not found\n";
      send(res, missing ? 404 : 500, "text/plain; charset=utf-8", missing ? text : "cannot read the panel bundle\n", head);
      return true;
    }
    const ext = name.slice(name.lastIndexOf("."));
    send(res, 200, CONTENT_TYPES[ext] ?? "application/octet-stream", body, head);
    return true;
  };
}
