/** pino's numeric levels. */
const PINO_LEVELS: Readonly<Record<number, string>> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};

/** Fields shown in the fixed part of the line (or not useful to a human at a terminal). */
const HIDDEN_FIELDS = new Set(["level", "time", "msg", "pid", "hostname", "svc", "v"]);

function clock(time: unknown): string {
  const d = typeof time === "number" || typeof time === "string" ? new Date(time) : new Date();
  return Number.isNaN(d.getTime()) ? new Date().toISOString().slice(11, 23) : d.toISOString().slice(11, 23);
}

function renderField(value: unknown): string {
  if (typeof value === "string") return /[\s"=]/.test(value) ? JSON.stringify(value) : value;
  return JSON.stringify(value) ?? String(value);
}

/**
 * Turns one stdout line of a service (pino JSON) into a line for a human:
 * `membership      | 12:00:01.123 INFO  listening subject=unibus.v1.membership.>`.
 * Lines that are not JSON objects are kept verbatim after the prefix, so
 * nothing a service prints is lost.
 */
export function formatChildLine(service: string, line: string, nameWidth: number): string {
  const prefix = `${service.padEnd(nameWidth)} |`;
  let record: unknown;
  try {
    record = line.startsWith("{") ? JSON.parse(line) : undefined;
  } catch {
    record = undefined;
  }
  if (typeof record !== "object" || record === null || Array.isArray(record)) return `${prefix} ${line}`;
  const r = record as Record<string, unknown>;
  const level = typeof r.level === "number" ? (PINO_LEVELS[r.level] ?? String(r.level)) : typeof r.level === "string" ? r.level.toUpperCase() : "INFO";
  const msg = typeof r.msg === "string" ? r.msg : "";
  const extra = Object.entries(r)
    .filter(([k]) => !HIDDEN_FIELDS.has(k))
    .map(([k, v]) => `${k}=${renderField(v)}`)
    .join(" ");
  return `${prefix} ${clock(r.time)} ${level.padEnd(5)} ${msg}${extra ? `${msg ? " " : ""}${extra}` : ""}`;
}

/**
 * The service a line of a multi-service process comes from: its pino `svc`
 * field, else `fallback` (lines that are not JSON, or carry no `svc`).
 */
export function serviceOfLine(line: string, fallback: string): string {
  if (!line.startsWith("{")) return fallback;
  try {
    const svc: unknown = (JSON.parse(line) as Record<string, unknown>)["svc"];
    return typeof svc === "string" && /^[-\w]{1,64}$/.test(svc) ? svc : fallback;
  } catch {
    return fallback;
  }
}
