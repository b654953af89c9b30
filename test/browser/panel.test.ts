// The admin panel in a real browser: Debian's headless Chromium (playwright-
// core, no browser download) against a real `unibus up`, loading the panel
// from the URL `up` prints (healthz's HTTP server). It signs in with
// identity files through the file picker, as an operator would.
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import type { BrowserContext, Page } from "playwright-core";
import { createIdentity, loadIdentityFile, writeIdentityFile } from "@unibus/crypto";
import type { Identity } from "@unibus/crypto";
import { PANEL_DIST_DIR } from "@unibus/panel";
import { connect } from "@unibus/sdk";
import type { UnibusClient } from "@unibus/sdk";
import { eventually, freeLoopbackPort, spawnWatched } from "@unibus/testing";
import type { WatchedProcess } from "@unibus/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const BIN = join(REPO, "libs/cli/bin/unibus.mjs");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const ARTIFACTS = join(REPO, "test-artifacts/panel");
// Without the background-networking flags Chromium phones home at start,
// and on a closed network that stalls its own loopback connections.
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const UI_MS = 15_000;

interface AxeResult {
  violations: { id: string; impact: string | null; help: string; nodes: { target: string[] }[] }[];
}

describe("admin panel in headless Chromium against unibus up", () => {
  let home: string;
  let profile: string;
  let up: WatchedProcess;
  let panelUrl: string;
  let context: BrowserContext;
  let page: Page;
  let admin: Identity;
  let adminClient: UnibusClient;
  const member = createIdentity({ label: "carol" });
  const memberFile = { path: "" };
  const bob = createIdentity({ label: "bob" });
  let roomId: string;
  const pageErrors: string[] = [];
  const cspViolations: string[] = [];

  async function screenshot(name: string): Promise<void> {
    const path = join(ARTIFACTS, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.log(`screenshot: ${path}`);
  }

  async function axeCheck(): Promise<AxeResult["violations"]> {
    // Runtime.evaluate is not subject to the page's CSP, so the panel keeps its strict policy under test.
    const source = await readFile(join(REPO, "node_modules/axe-core/axe.min.js"), "utf8");
    await page.evaluate(source);
    const result = await page.evaluate(async () => {
      const axe = (globalThis as unknown as { axe: { run(ctx: unknown, opts: unknown): Promise<AxeResult> } }).axe;
      return axe.run(document, { resultTypes: ["violations"] });
    });
    return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  }

  async function signIn(p: Page, file: string): Promise<void> {
    await p.goto(panelUrl);
    await p.setInputFiles("#identity-file", file);
    await p.click("#connect");
  }

  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), "unibus-panel-"));
    await mkdir(ARTIFACTS, { recursive: true });
    const wsPort = await freeLoopbackPort();
    const { UNIBUS_URL: _u, UNIBUS_IDENTITY: _i, ...rest } = process.env;
    const env = { ...rest, UNIBUS_HOME: home, UNIBUS_PORT: String(await freeLoopbackPort()), UNIBUS_MONITOR_PORT: String(await freeLoopbackPort()), UNIBUS_WS_PORT: String(wsPort) };
    up = spawnWatched(process.execPath, [BIN, "up"], { env, label: "unibus up" });
    await up.waitFor("stdout", /Next: npx unibus micro ls/, 90_000);
    // `up` prints where healthz serves the panel; that is what the browser loads.
    panelUrl = /admin panel: +(http:\/\/127\.0\.0\.1:\d+\/panel\/) /.exec(up.stdout())?.[1] ?? "";
    expect(panelUrl, up.stdout()).not.toBe("");
    const wsUrl = `ws://127.0.0.1:${wsPort}`;
    expect(up.stdout()).toContain(`panel bus URL:   ${wsUrl}`);
    expect(await readFile(join(home, "env"), "utf8")).toContain(`UNIBUS_WS_URL=${wsUrl}`);

    admin = await loadIdentityFile(join(home, "admin.id"));
    const envFile = await readFile(join(home, "env"), "utf8");
    const busUrl = /UNIBUS_URL=(.*)/.exec(envFile)?.[1] ?? "";
    adminClient = await connect({ url: busUrl, identity: admin });
    await adminClient.users.add(member.signingKey.principal, "carol", "member");
    roomId = (await adminClient.rooms.create("ops", { persist: true, encrypt: true })).room.id;
    memberFile.path = join(home, "carol.id");
    await writeIdentityFile(memberFile.path, member);

    // healthz starts its HTTP server with the services; the panel offers the bus's WebSocket URL.
    const config = await eventually(
      () => fetch(`${panelUrl}panel-config.json`).then((r) => (r.ok ? (r.json() as Promise<{ wsUrl?: string }>) : undefined), () => undefined),
      (c) => c !== undefined,
      { timeoutMs: 30_000, intervalMs: 200, what: "healthz serving the panel" },
    );
    expect(config).toEqual({ wsUrl });
    console.log(`panel (${PANEL_DIST_DIR}) at ${panelUrl}`);

    profile = await mkdtemp(join(tmpdir(), "unibus-chromium-"));
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    page = await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(e.message));
    page.on("console", (m) => {
      if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
  });

  afterAll(async () => {
    await context?.close();
    await adminClient?.close();
    if (up !== undefined && up.child.exitCode === null) {
      up.child.kill("SIGTERM");
      await up.exitCode(30_000);
    }
    await rm(home, { recursive: true, force: true });
    // The profile holds the IndexedDB record the tests made: never leave it behind.
    if (profile !== undefined) await rm(profile, { recursive: true, force: true });
  });

  it("shows a member identity only the 'admin role required' state", async () => {
    await signIn(page, memberFile.path);
    await page.locator("#refused").waitFor({ state: "visible", timeout: UI_MS });
    expect(await page.textContent("#refused-title")).toBe("Admin role required");
    expect(await page.textContent("#refused-text")).toContain("reason: forbidden");
    expect(await page.isVisible("#app")).toBe(false);
    expect(await page.isVisible("#users-table")).toBe(false);
    await screenshot("refused");
    await page.click("#refused-signout");
    await page.locator("#login").waitFor({ state: "visible", timeout: UI_MS });
  });

  it("signs in as the admin from the file picker and lists users, revoked included", async () => {
    await signIn(page, join(home, "admin.id"));
    await page.locator("#app").waitFor({ state: "visible", timeout: UI_MS });
    expect(await page.textContent("#who")).toContain(admin.signingKey.principal);
    await page.locator(`#users-table [data-principal="${member.signingKey.principal}"]`).waitFor({ timeout: UI_MS });
    expect(await page.textContent("#users-table")).toContain("carol");
  });

  it("adds a user with a role, finds it by search, revokes it after a confirm, and the status flips", async () => {
    const principal = bob.signingKey.principal;
    await page.fill("#user-principal", principal);
    await page.fill("#user-handle", "bob");
    await page.selectOption("#user-role", "member");
    await page.click("#user-add button[type=submit]");
    const status = page.locator(`#users-table [data-principal="${principal}"]`);
    await status.waitFor({ timeout: UI_MS });
    expect(await status.textContent()).toBe("active");
    expect((await adminClient.users.get(principal)).user.status).toBe("active");

    await page.fill("#user-search", "bob");
    expect(await page.locator("#users-table tbody tr").count()).toBe(1);
    await screenshot("users");

    // Dismissing the confirm sends nothing: confirm() returns before any request is made.
    const asked = page.waitForEvent("dialog");
    const clicked = page.click(`button[aria-label="Revoke bob"]`);
    const dialog = await asked;
    expect(dialog.message()).toContain(principal);
    await dialog.dismiss();
    await clicked;
    expect(await status.textContent()).toBe("active");
    expect((await adminClient.users.get(principal)).user.status).toBe("active");

    page.once("dialog", (d) => void d.accept());
    await page.click(`button[aria-label="Revoke bob"]`);
    await page.locator(`#users-table .status-revoked[data-principal="${principal}"]`).waitFor({ timeout: UI_MS });
    expect((await adminClient.users.get(principal)).user.status).toBe("revoked");
    await page.fill("#user-search", "");
  });

  it("refuses a revoked or unknown identity at connect, as the CLI is refused", async () => {
    const bobFile = join(home, "bob.id");
    await writeIdentityFile(bobFile, bob);
    const strangerFile = join(home, "stranger.id");
    await writeIdentityFile(strangerFile, createIdentity());
    const other = await context.newPage();
    try {
      for (const file of [bobFile, strangerFile]) {
        await signIn(other, file);
        await other.locator("#error").filter({ hasText: /authorization/i }).waitFor({ timeout: UI_MS });
        expect(await other.isVisible("#app")).toBe(false);
        expect(await other.isVisible("#refused")).toBe(false);
        expect(await other.textContent("#who")).toBe("Not signed in");
      }
    } finally {
      await other.close();
    }
  });

  it("shows a service error with its reason (adding a principal twice)", async () => {
    await page.fill("#user-principal", member.signingKey.principal);
    await page.fill("#user-handle", "carol2");
    await page.click("#user-add button[type=submit]");
    await page.locator("#error").filter({ hasText: "reason:" }).waitFor({ timeout: UI_MS });
    expect(await page.textContent("#error")).toMatch(/code 409/);
  });

  it("lists rooms, shows members with handles and quota, and invites a user", async () => {
    await page.click("#tab-rooms");
    await page.click(`button[aria-label="Open room ops"]`);
    await page.locator("#room-title").waitFor({ timeout: UI_MS });
    expect(await page.textContent("#room-detail")).toContain("maxBytes");
    await page.selectOption("#invite-principal", member.signingKey.principal);
    await page.click("#room-invite button[type=submit]");
    await page.locator(`button[aria-label="Remove carol from ops"]`).waitFor({ timeout: UI_MS });
    const members = (await adminClient.rooms.get(roomId)).members.map((m) => m.principal);
    expect(members).toContain(member.signingKey.principal);
    expect(await page.textContent("#room-detail")).toContain("Key epochs");
    await screenshot("rooms");
  });

  it("says plainly that node lifecycle is not available, from what the gateway reports", async () => {
    await page.click("#tab-nodes");
    await page.locator("#nodes-unavailable").waitFor({ timeout: UI_MS });
    expect(await page.textContent("#nodes-body")).toContain("unibus.v1.replica.handshake.hello");
    await screenshot("nodes");
  });

  it("shows the health posture (quorum, TLS, at-rest, sync policy, bucket leaders, services) and live request rates", async () => {
    await page.click("#tab-health");
    await page.locator("#health-body table").first().waitFor({ timeout: UI_MS });
    const body = (await page.textContent("#health-body")) ?? "";
    for (const field of ["Posture", "cluster_size", "sync_policy", "at_rest", "chachapoly", "tls", "buckets", "KV_users", "leader", "services", "instances"]) expect(body).toContain(field);
    await page.locator("#rates svg.chart").waitFor({ timeout: UI_MS });
    // Two rates (three $SRV.STATS samples, 2 s apart) draw the first line; the table lists every service's replicas.
    await page.locator("#rates svg.chart polyline").first().waitFor({ state: "attached", timeout: UI_MS });
    // Traffic made now shows up as a non-zero rate in a later sample: the chart is live.
    for (let i = 0; i < 20; i++) await adminClient.users.list({ limit: 1 });
    await page.waitForFunction(() => Number(/Latest: ([0-9.]+) requests/.exec(document.getElementById("rates")?.textContent ?? "")?.[1] ?? 0) > 0, undefined, { timeout: UI_MS });
    expect(await page.textContent("#rates")).toContain("membership");
    await screenshot("health");
  });

  it("works from the keyboard alone: tabs with arrows and Enter, a form with Tab and Enter", async () => {
    await page.focus("#tab-health");
    await page.keyboard.press("ArrowRight");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("tab-users");
    expect(await page.getAttribute("#tab-users", "aria-selected")).toBe("true");
    await page.keyboard.press("ArrowLeft");
    await page.keyboard.press("Home");
    expect(await page.getAttribute("#tab-users", "aria-selected")).toBe("true");
    // Tab from the tab list reaches the form fields in order.
    const dave = createIdentity().signingKey.principal;
    const order: string[] = [];
    for (let i = 0; i < 8 && (await page.evaluate(() => document.activeElement?.id)) !== "user-principal"; i++) {
      await page.keyboard.press("Tab");
      order.push((await page.evaluate(() => document.activeElement?.id)) ?? "");
    }
    expect(order.at(-1)).toBe("user-principal");
    await page.keyboard.type(dave);
    await page.keyboard.press("Tab");
    await page.keyboard.type("dave");
    await page.keyboard.press("Tab");
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Add user");
    await page.keyboard.press("Enter");
    await page.locator(`#users-table [data-principal="${dave}"]`).waitFor({ timeout: UI_MS });
    // Arrow keys move to the Rooms tab and Enter on a focused tab keeps it selected.
    await page.focus("#tab-users");
    await page.keyboard.press("ArrowRight");
    await page.keyboard.press("Enter");
    expect(await page.getAttribute("#tab-rooms", "aria-selected")).toBe("true");
    expect(await page.isVisible("#panel-rooms")).toBe(true);
  });

  it("has no serious or critical accessibility violations on any tab (axe-core)", async () => {
    const found: string[] = [];
    for (const tab of ["users", "rooms", "nodes", "health"]) {
      await page.click(`#tab-${tab}`);
      await page.locator(`#panel-${tab} table, #panel-${tab} .notice`).first().waitFor({ timeout: UI_MS });
      for (const v of await axeCheck()) found.push(`${tab}: ${v.id} (${v.impact}) ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
    }
    await page.click("#signout");
    await page.locator("#login").waitFor({ state: "visible", timeout: UI_MS });
    for (const v of await axeCheck()) found.push(`login: ${v.id} (${v.impact}) ${v.help}`);
    await screenshot("login");
    expect(found).toEqual([]);
  });

  it("remembers the identity only when asked, encrypted under the passphrase, and forgets it", async () => {
    await page.goto(panelUrl);
    await page.setInputFiles("#identity-file", join(home, "admin.id"));
    await page.check("#remember");
    await page.fill("#passphrase", "short");
    await page.click("#connect");
    await page.locator("#error").filter({ hasText: "at least 8" }).waitFor({ timeout: UI_MS });
    expect(await page.isVisible("#app")).toBe(false);

    const passphrase = "correct horse battery staple";
    await page.fill("#passphrase", passphrase);
    await page.click("#connect");
    await page.locator("#app").waitFor({ state: "visible", timeout: UI_MS });
    // What IndexedDB holds is ciphertext: neither the seed nor the principal appears in it.
    const stored = await page.evaluate(
      () =>
        new Promise<string>((resolve, reject) => {
          const open = indexedDB.open("unibus-panel");
          open.onerror = () => reject(new Error("no db"));
          open.onsuccess = () => {
            const get = open.result.transaction("identity").objectStore("identity").get("saved");
            get.onsuccess = () => {
              const v = get.result as { salt: Uint8Array; iv: Uint8Array; ciphertext: ArrayBuffer };
              const hex = (b: Uint8Array): string => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
              resolve(JSON.stringify({ salt: hex(v.salt), iv: hex(v.iv), ct: hex(new Uint8Array(v.ciphertext)), text: new TextDecoder().decode(v.ciphertext) }));
            };
          };
        }),
    );
    const seedHex = Buffer.from(admin.signingKey.seedBytes()).toString("hex");
    expect(stored).not.toContain(seedHex);
    expect(stored).not.toContain(Buffer.from(seedHex).toString("hex"));
    expect(stored).not.toContain(admin.signingKey.principal);
    expect((JSON.parse(stored) as { ct: string }).ct.length).toBeGreaterThan(128);

    await page.click("#signout");
    await page.reload();
    await page.fill("#passphrase", "not the passphrase");
    await page.click("#load-saved");
    await page.locator("#error").filter({ hasText: "wrong passphrase" }).waitFor({ timeout: UI_MS });
    await page.fill("#passphrase", passphrase);
    await page.click("#load-saved");
    await page.locator("#app").waitFor({ state: "visible", timeout: UI_MS });
    expect(await page.textContent("#who")).toContain(admin.signingKey.principal);

    await page.click("#signout");
    await page.click("#forget");
    await page.locator("#message").filter({ hasText: "deleted" }).waitFor({ timeout: UI_MS });
    await page.click("#load-saved");
    await page.locator("#error").filter({ hasText: "no identity is remembered" }).waitFor({ timeout: UI_MS });
  });

  it("ran without script errors or CSP violations", () => {
    expect(pageErrors).toEqual([]);
    expect(cspViolations).toEqual([]);
  });
});
