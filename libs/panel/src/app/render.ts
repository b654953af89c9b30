/// <reference lib="dom" />
// DOM helpers. Every value reaches the page as a text node (never HTML), so
// a handle or room name chosen by a user cannot inject script into the
// admin's session.
import { UnibusError } from "@unibus/contracts";

type Child = Node | string | number | boolean | null | undefined;

/** `document.createElement` with attributes and children (text for non-nodes). */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/** A table with a caption, header row and body rows. */
export function table(caption: string, headers: readonly string[], rows: readonly Child[][]): HTMLTableElement {
  return el(
    "table",
    {},
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))),
  );
}

function scalar(v: unknown): string {
  if (v === null || v === undefined) return "—";
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint") return String(v);
  return JSON.stringify(v) ?? "—";
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Renders any JSON document as sections and tables: scalars as a key/value
 * table, arrays of objects as a table over the union of their keys, nested
 * objects as sub-sections. The healthz posture grows fields over time; the
 * panel shows what it gets instead of a fixed layout.
 */
export function renderDocument(title: string, doc: unknown, level = 3): HTMLElement {
  const h = el(level <= 3 ? "h3" : "h4", {}, title);
  const section = el("section", {}, h);
  if (!isPlainObject(doc)) {
    section.append(el("p", {}, scalar(doc)));
    return section;
  }
  const scalars: [string, unknown][] = [];
  const nested: HTMLElement[] = [];
  for (const [k, v] of Object.entries(doc)) {
    if (Array.isArray(v) && v.every(isPlainObject) && v.length > 0) {
      const cols = [...new Set(v.flatMap((row) => Object.keys(row)))];
      nested.push(el("section", {}, el(level <= 3 ? "h4" : "h5", {}, k), table(k, cols, v.map((row) => cols.map((c) => scalar(row[c]))))));
    } else if (isPlainObject(v)) {
      nested.push(renderDocument(k, v, level + 1));
    } else {
      scalars.push([k, Array.isArray(v) ? v.map(scalar).join(", ") : v]);
    }
  }
  if (scalars.length > 0) section.append(table(title, ["field", "value"], scalars.map(([k, v]) => [k, scalar(v)])));
  section.append(...nested);
  return section;
}

/** A readable one-line message for any error, with the service's reason when there is one. */
export function describeError(err: unknown): string {
  if (err instanceof UnibusError) return `${err.message} (reason: ${err.reason}, code ${err.code})`;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === "string" && code !== "" ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}

/** A small line chart (SVG, no library) of the last values of each series. */
export function lineChart(label: string, series: readonly { name: string; color: string; values: readonly number[] }[]): SVGSVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const w = 480;
  const hgt = 120;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(hgt));
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  for (const s of series) {
    const n = s.values.length;
    if (n < 2) continue;
    const pts = s.values.map((v, i) => `${((i / (n - 1)) * (w - 10) + 5).toFixed(1)},${(hgt - 5 - (v / max) * (hgt - 20)).toFixed(1)}`).join(" ");
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts);
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", s.color);
    line.setAttribute("stroke-width", "2");
    svg.append(line);
  }
  const text = document.createElementNS(ns, "text");
  text.setAttribute("x", "8");
  text.setAttribute("y", "14");
  text.setAttribute("font-size", "11");
  text.textContent = `max ${max.toFixed(1)}/s`;
  svg.append(text);
  return svg;
}
