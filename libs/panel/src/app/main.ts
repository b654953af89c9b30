/// <reference lib="dom" />
// The admin panel: sign in with an identity file, then four tabs. All bus
// access goes through Bus (signed requests); there is no backend.
import { ErrorCode, Subjects, UnibusError } from "@unibus/contracts";
import type { KeysEpochsReply, MembershipRoomsGetReply, MembershipUsersListReply } from "@unibus/contracts";
import type { SigningKey } from "@unibus/crypto";
import { Bus, POSTURE_SUBJECT } from "./bus.js";
import type { MicroInfo, MicroStats } from "./bus.js";
import { forgetIdentity, IdentityLoadError, parseIdentityText, recallIdentity, rememberIdentity } from "./identity.js";
import { describeError, el, lineChart, renderDocument, table } from "./render.js";

type User = MembershipUsersListReply["users"][number];

const DEFAULT_WS_URL = "ws://127.0.0.1:4280";
const RATE_POLL_MS = 2_000;
const RATE_POINTS = 30;

function $(id: string): HTMLElement {
  const node = document.getElementById(id);
  if (node === null) throw new Error(`missing #${id}`);
  return node;
}
function input(id: string): HTMLInputElement {
  return $(id) as HTMLInputElement;
}

let bus: Bus | undefined;
let users: User[] = [];
let rateTimer: ReturnType<typeof setInterval> | undefined;

function showError(err: unknown): void {
  $("message").textContent = "";
  $("error").textContent = describeError(err);
}
function showMessage(text: string): void {
  $("error").textContent = "";
  $("message").textContent = text;
}
/** Runs an action, showing its failure as a readable message instead of throwing into the void. */
function guarded(action: () => Promise<void>): () => void {
  return () => {
    action().catch(showError);
  };
}

// ---------------------------------------------------------------- sign-in

async function loadConfig(): Promise<void> {
  let url = DEFAULT_WS_URL;
  try {
    const res = await fetch("panel-config.json", { cache: "no-store" });
    if (res.ok) {
      const cfg = (await res.json()) as { wsUrl?: unknown };
      if (typeof cfg.wsUrl === "string") url = cfg.wsUrl;
    }
  } catch {
    // No config served: keep the `unibus up` default.
  }
  if (input("ws-url").value === "") input("ws-url").value = url;
}

async function keyFromPicker(): Promise<SigningKey> {
  const file = input("identity-file").files?.[0];
  if (file === undefined) throw new IdentityLoadError("choose an identity file first");
  return parseIdentityText(await file.text());
}

async function signIn(key: SigningKey): Promise<void> {
  await signOut();
  showMessage("Connecting…");
  const next = await Bus.connect(input("ws-url").value, key);
  // One listing decides the role: the service, not the panel, says who is an admin.
  try {
    await next.users.list({ limit: 1 });
  } catch (err) {
    if (err instanceof UnibusError && (err.code === ErrorCode.Forbidden || err.code === ErrorCode.Unauthorized)) {
      bus = next;
      $("login").hidden = true;
      $("app").hidden = true;
      $("refused").hidden = false;
      $("who").textContent = `Signed in as ${key.principal} (not an admin)`;
      $("refused-text").textContent = `Admin role required: ${key.principal} is not an admin of this bus (${describeError(err)}).`;
      showMessage("");
      $("refused-signout").focus();
      return;
    }
    await next.close();
    throw err;
  }
  bus = next;
  $("who").textContent = `Signed in as ${key.principal}`;
  $("login").hidden = true;
  $("refused").hidden = true;
  $("app").hidden = false;
  showMessage("Connected.");
  selectTab("users");
  await refreshUsers();
}

async function signOut(): Promise<void> {
  if (rateTimer !== undefined) clearInterval(rateTimer);
  rateTimer = undefined;
  const old = bus;
  bus = undefined;
  users = [];
  await old?.close();
  $("app").hidden = true;
  $("refused").hidden = true;
  $("login").hidden = false;
  $("who").textContent = "Not signed in";
}

function requireBus(): Bus {
  if (bus === undefined) throw new Error("not signed in");
  return bus;
}

// ---------------------------------------------------------------- tabs

const TABS = ["users", "rooms", "nodes", "health"] as const;
type Tab = (typeof TABS)[number];

function selectTab(tab: Tab, focus = false): void {
  // A message belongs to the action that caused it, not to the next tab.
  $("message").textContent = "";
  $("error").textContent = "";
  for (const t of TABS) {
    const button = $(`tab-${t}`);
    const selected = t === tab;
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`panel-${t}`).hidden = !selected;
    if (selected && focus) button.focus();
  }
  if (rateTimer !== undefined && tab !== "health") {
    clearInterval(rateTimer);
    rateTimer = undefined;
  }
  const load: Record<Tab, () => Promise<void>> = { users: refreshUsers, rooms: refreshRooms, nodes: refreshNodes, health: refreshHealth };
  if (bus !== undefined) load[tab]().catch(showError);
}

function wireTabs(): void {
  for (const t of TABS) $(`tab-${t}`).addEventListener("click", () => selectTab(t));
  // Arrow keys move between tabs (WAI-ARIA tabs pattern); Tab moves into the panel.
  $("tabs").addEventListener("keydown", (e) => {
    const current = TABS.findIndex((t) => $(`tab-${t}`).getAttribute("aria-selected") === "true");
    let next: number | undefined;
    if (e.key === "ArrowRight") next = (current + 1) % TABS.length;
    if (e.key === "ArrowLeft") next = (current + TABS.length - 1) % TABS.length;
    if (e.key === "Home") next = 0;
    if (e.key === "End") next = TABS.length - 1;
    const tab = next === undefined ? undefined : TABS[next];
    if (tab === undefined) return;
    e.preventDefault();
    selectTab(tab, true);
  });
}

// ---------------------------------------------------------------- users

async function refreshUsers(): Promise<void> {
  const b = requireBus();
  const all: User[] = [];
  for await (const u of b.users.listAll()) all.push(u);
  users = all;
  renderUsers();
}

function renderUsers(): void {
  const q = input("user-search").value.trim().toLowerCase();
  const shown = users.filter((u) => q === "" || [u.handle, u.principal, u.role, u.status].some((f) => f.toLowerCase().includes(q)));
  const rows = shown.map((u) => [
    u.handle,
    el("span", { class: "mono" }, u.principal),
    u.role,
    el("span", { class: `status-${u.status}`, "data-principal": u.principal }, u.status),
    u.revokedAt ?? u.addedAt,
    u.status === "active" ? revokeButton(u) : "",
  ]);
  $("users-table").replaceChildren(table(`${shown.length} of ${users.length} users`, ["handle", "principal", "role", "status", "since", "action"], rows));
}

function revokeButton(u: User): HTMLButtonElement {
  const button = el("button", { type: "button", class: "danger", "aria-label": `Revoke ${u.handle}` }, "Revoke");
  button.addEventListener(
    "click",
    guarded(async () => {
      // Revoking closes the user's connections at once: ask first.
      if (!window.confirm(`Revoke ${u.handle} (${u.principal})? Their connections close immediately.`)) return;
      await requireBus().users.revoke(u.principal);
      showMessage(`Revoked ${u.handle}.`);
      await refreshUsers();
    }),
  );
  return button;
}

function wireUsers(): void {
  $("user-add").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(async () => {
      const role = (input("user-role") as unknown as HTMLSelectElement).value === "admin" ? "admin" : "member";
      const handle = input("user-handle").value.trim();
      await requireBus().users.add(input("user-principal").value.trim(), handle, role);
      input("user-principal").value = "";
      input("user-handle").value = "";
      showMessage(`Added ${handle} as ${role}.`);
      await refreshUsers();
    })();
  });
  input("user-search").addEventListener("input", renderUsers);
}

// ---------------------------------------------------------------- rooms

async function refreshRooms(): Promise<void> {
  const b = requireBus();
  const rows: (Node | string)[][] = [];
  for await (const r of b.rooms.listAll({ all: true })) {
    const open = el("button", { type: "button", "aria-label": `Open room ${r.room.name}` }, "Open");
    open.addEventListener("click", guarded(() => showRoom(r.room.id)));
    rows.push([r.room.name, el("span", { class: "mono" }, r.room.id), r.room.policy.persist ? "persisted" : "live", r.room.policy.encrypt ? "yes" : "no", r.room.createdAt, open]);
  }
  $("rooms-table").replaceChildren(table(`${rows.length} rooms`, ["name", "id", "storage", "encrypted", "created", "details"], rows));
}

async function showRoom(roomId: string): Promise<void> {
  const b = requireBus();
  const members: MembershipRoomsGetReply["members"] = [];
  let first: MembershipRoomsGetReply | undefined;
  let cursor: string | undefined;
  do {
    const page = await b.rooms.get(roomId, { withHandles: true, ...(cursor === undefined ? {} : { cursor }) });
    first ??= page;
    members.push(...page.members);
    cursor = page.next_cursor;
  } while (cursor !== undefined);
  let epochs: KeysEpochsReply | string;
  try {
    epochs = await b.request<KeysEpochsReply>(Subjects.keys.epochsList, { roomId });
  } catch (err) {
    epochs = `epochs unavailable: ${describeError(err)}`;
  }
  const room = first.room;
  const memberRows = members.map((m) => {
    const remove = el("button", { type: "button", class: "danger", "aria-label": `Remove ${m.handle ?? m.principal} from ${room.name}` }, "Remove");
    remove.addEventListener(
      "click",
      guarded(async () => {
        if (!window.confirm(`Remove ${m.handle ?? m.principal} from ${room.name}?`)) return;
        await b.rooms.remove(roomId, m.principal);
        showMessage(`Removed ${m.handle ?? m.principal} from ${room.name}.`);
        await showRoom(roomId);
      }),
    );
    return [m.handle ?? "—", el("span", { class: "mono" }, m.principal), m.role, m.addedAt, remove];
  });
  const inviteForm = el(
    "form",
    { id: "room-invite" },
    el("label", { for: "invite-principal" }, "Invite user"),
    inviteSelect(members.map((m) => m.principal)),
    el("label", { for: "invite-role" }, "Room role"),
    el("select", { id: "invite-role" }, el("option", { value: "member" }, "member"), el("option", { value: "owner" }, "owner")),
    el("button", { type: "submit" }, "Invite"),
  );
  inviteForm.addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(async () => {
      const principal = ($("invite-principal") as HTMLSelectElement).value;
      const role = ($("invite-role") as HTMLSelectElement).value === "owner" ? "owner" : "member";
      if (principal === "") throw new Error("choose a user to invite");
      await b.rooms.invite(roomId, principal, role);
      showMessage(`Invited ${users.find((u) => u.principal === principal)?.handle ?? principal} to ${room.name}.`);
      await showRoom(roomId);
    })();
  });
  const detail = el(
    "section",
    { "aria-labelledby": "room-title" },
    el("h3", { id: "room-title" }, `Room ${room.name}`),
    table("members", ["handle", "principal", "role", "added", "action"], memberRows),
    inviteForm,
    first.quota === undefined ? el("p", {}, "Live room: no stored history, no quota.") : renderDocument("Quota", first.quota),
    first.usage === undefined ? null : renderDocument("Usage", first.usage),
    typeof epochs === "string" ? el("p", {}, epochs) : renderDocument("Key epochs", { epochs: epochs.epochs.join(", ") || "none yet", ...(epochs.current === undefined ? {} : { current: epochs.current }) }),
  );
  $("room-detail").replaceChildren(detail);
}

function inviteSelect(members: readonly string[]): HTMLSelectElement {
  const candidates = users.filter((u) => u.status === "active" && !members.includes(u.principal));
  return el("select", { id: "invite-principal" }, el("option", { value: "" }, "choose a user"), ...candidates.map((u) => el("option", { value: u.principal }, `${u.handle} (${u.principal.slice(0, 8)}…)`)));
}

// ---------------------------------------------------------------- nodes

/** Subjects under which the replica gateway answers node lifecycle requests once it has them. */
const LIFECYCLE_SUBJECT = `${Subjects.replicaGateway.all.slice(0, -1)}nodes.`;

async function refreshNodes(): Promise<void> {
  const infos = await requireBus().discover<MicroInfo>("$SRV.INFO.replica-gateway");
  const body = $("nodes-body");
  if (infos.length === 0) {
    body.replaceChildren(el("p", { class: "notice" }, "The replica gateway is not running on this bus, so there are no nodes to manage."));
    return;
  }
  const endpoints = infos.flatMap((i) => i.endpoints ?? []);
  const lifecycle = endpoints.filter((e) => e.subject.startsWith(LIFECYCLE_SUBJECT));
  const summary = table(
    "replica-gateway replicas",
    ["id", "version", "endpoints"],
    infos.map((i) => [el("span", { class: "mono" }, i.id), i.version, (i.endpoints ?? []).map((e) => e.subject).join(", ")]),
  );
  if (lifecycle.length === 0) {
    body.replaceChildren(el("p", { class: "notice", id: "nodes-unavailable" }, "Node lifecycle not available on this bus yet: the replica gateway answers only the handshake, with no node list, approval or decommission endpoints."), summary);
    return;
  }
  body.replaceChildren(el("p", {}, `Lifecycle endpoints: ${lifecycle.map((e) => e.subject).join(", ")}`), summary);
}

// ---------------------------------------------------------------- health

const history: { requests: number[]; errors: number[] } = { requests: [], errors: [] };
let lastTotals: { at: number; requests: number; errors: number } | undefined;

async function refreshHealth(): Promise<void> {
  const b = requireBus();
  let doc: unknown;
  let title = "Posture";
  try {
    doc = await b.request(POSTURE_SUBJECT, {});
  } catch (err) {
    // Buses without the posture endpoint still answer the public status.
    if (!(err instanceof Error) || (err instanceof UnibusError && err.code === ErrorCode.Forbidden)) throw err;
    doc = await b.request(Subjects.healthz.status, {});
    title = "Status (this bus has no posture endpoint yet)";
  }
  $("health-body").replaceChildren(renderDocument(title, doc));
  history.requests = [];
  history.errors = [];
  lastTotals = undefined;
  await sampleRates();
  if (rateTimer !== undefined) clearInterval(rateTimer);
  rateTimer = setInterval(() => void sampleRates().catch(showError), RATE_POLL_MS);
}

async function sampleRates(): Promise<void> {
  const stats = await requireBus().discover<MicroStats>("$SRV.STATS");
  const perService = new Map<string, { requests: number; errors: number; replicas: number }>();
  for (const s of stats) {
    const acc = perService.get(s.name) ?? { requests: 0, errors: 0, replicas: 0 };
    acc.replicas += 1;
    for (const e of s.endpoints ?? []) {
      acc.requests += e.num_requests;
      acc.errors += e.num_errors;
    }
    perService.set(s.name, acc);
  }
  const totals = { at: Date.now(), requests: 0, errors: 0 };
  for (const v of perService.values()) {
    totals.requests += v.requests;
    totals.errors += v.errors;
  }
  if (lastTotals !== undefined) {
    const dt = Math.max(0.001, (totals.at - lastTotals.at) / 1000);
    history.requests = [...history.requests, Math.max(0, totals.requests - lastTotals.requests) / dt].slice(-RATE_POINTS);
    history.errors = [...history.errors, Math.max(0, totals.errors - lastTotals.errors) / dt].slice(-RATE_POINTS);
  }
  lastTotals = totals;
  const rows = [...perService.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, v]) => [name, v.replicas, v.requests, v.errors]);
  $("rates").replaceChildren(
    lineChart("Requests per second (blue) and error replies, denials included, per second (red), all services", [
      { name: "requests/s", color: "#1d4ed8", values: history.requests },
      { name: "errors/s", color: "#b91c1c", values: history.errors },
    ]),
    el("p", {}, `Latest: ${(history.requests.at(-1) ?? 0).toFixed(1)} requests/s, ${(history.errors.at(-1) ?? 0).toFixed(1)} errors/s (micro $SRV.STATS every ${RATE_POLL_MS / 1000} s).`),
    table("requests and errors since each replica started", ["service", "replicas", "requests", "errors"], rows),
  );
}

// ---------------------------------------------------------------- start

function wireLogin(): void {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(async () => {
      const key = await keyFromPicker();
      if (input("remember").checked) await rememberIdentity(key, input("passphrase").value);
      await signIn(key);
    })();
  });
  $("load-saved").addEventListener("click", guarded(async () => signIn(await recallIdentity(input("passphrase").value))));
  $("forget").addEventListener(
    "click",
    guarded(async () => {
      await forgetIdentity();
      showMessage("The remembered identity was deleted from this browser.");
    }),
  );
  for (const id of ["signout", "refused-signout"]) {
    $(id).addEventListener(
      "click",
      guarded(async () => {
        await signOut();
        showMessage("Signed out.");
      }),
    );
  }
}

wireLogin();
wireTabs();
wireUsers();
void loadConfig();
