import { createServer } from "node:http";
import type { Server } from "node:http";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPanelHandler, panelContentSecurityPolicy } from "./handler.js";
import type { PanelHandler } from "./handler.js";

async function serve(handler: PanelHandler): Promise<{ server: Server; base: string }> {
  const server = createServer((req, res) => {
    void handler(req, res).then((handled) => {
      if (!handled) {
        res.statusCode = 418;
        res.end("not the panel");
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, base: `http://127.0.0.1:${(server.address() as { port: number }).port}` };
}

describe("createPanelHandler", () => {
  let dist: string;
  let server: Server;
  let base: string;
  let emptyServer: Server;
  let emptyBase: string;

  beforeAll(async () => {
    dist = await mkdtemp(join(tmpdir(), "panel-dist-"));
    await writeFile(join(dist, "index.html"), "<!doctype html><title>t</title>");
    await writeFile(join(dist, "panel.js"), "export {};");
    await writeFile(join(dist, "build.json"), "{}");
    ({ server, base } = await serve(createPanelHandler({ distDir: dist, wsUrl: "wss://bus.example:8443" })));
    ({ server: emptyServer, base: emptyBase } = await serve(createPanelHandler({ distDir: join(dist, "missing") })));
  });
  afterAll(async () => {
    server.close();
    emptyServer.close();
    await rm(dist, { recursive: true, force: true });
  });

  it("serves the bundle with a strict CSP, nosniff and no caching", async () => {
    const res = await fetch(`${base}/panel/`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const csp = res.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("script-src 'self';");
    expect(csp).not.toContain("unsafe-inline");
    expect(csp).toContain("connect-src 'self' ws://127.0.0.1:*");
    expect(csp).toContain("wss://bus.example:8443");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    expect(res.headers.get("cache-control")).toBe("no-store");
    const js = await fetch(`${base}/panel/panel.js`);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(await js.text()).toBe("export {};");
  });

  it("offers the bus WebSocket URL as the panel's config", async () => {
    const res = await fetch(`${base}/panel/panel-config.json`);
    expect(await res.json()).toEqual({ wsUrl: "wss://bus.example:8443" });
  });

  it("never leaves the bundle directory and serves only bundle file types", async () => {
    for (const path of ["/panel/../package.json", "/panel/%2e%2e/package.json", "/panel/..%2fpackage.json", "/panel/build.json", "/panel/sub/x.js", "/panel/.hidden.js"]) {
      const res = await fetch(`${base}${path}`);
      // fetch normalises plain `..` before sending, which then is not a panel path at all.
      expect([404, 418]).toContain(res.status);
      expect(await res.text()).not.toContain("@unibus");
    }
  });

  it("answers only GET and HEAD, redirects the bare prefix, and leaves other paths alone", async () => {
    const post = await fetch(`${base}/panel/index.html`, { method: "POST", body: "x" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
    const head = await fetch(`${base}/panel/index.html`, { method: "HEAD" });
    expect(head.status).toBe(200);
    const bare = await fetch(`${base}/panel`, { redirect: "manual" });
    expect(bare.status).toBe(308);
    expect(bare.headers.get("location")).toBe("/panel/");
    expect((await fetch(`${base}/healthz`)).status).toBe(418);
  });

  it("tells the operator to build the panel when the bundle is missing", async () => {
    const res = await fetch(`${emptyBase}/panel/`);
    expect(res.status).toBe(404);
    expect(await res.text()).toContain("npm run panel:build");
  });

  it("refuses a prefix that is not a /…/ path, and ignores non-WebSocket URLs in the CSP", () => {
    expect(() => createPanelHandler({ prefix: "panel" })).toThrow(TypeError);
    expect(panelContentSecurityPolicy("https://evil.example")).not.toContain("evil.example");
  });
});
