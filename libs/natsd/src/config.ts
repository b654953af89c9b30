import { NatsConfigError } from "./errors.js";

/**
 * A reference to an environment variable of the nats-server process, rendered
 * as `$NAME`. Secrets (JetStream keys, passwords) travel this way so they
 * never reach the config file or argv (architecture §1.4).
 */
export class EnvRef {
  /** Variable name, e.g. `UNIBUS_JS_KEY`. */
  readonly name: string;

  constructor(name: string) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw new NatsConfigError(`invalid environment variable name for envRef: ${JSON.stringify(name)}`);
    }
    this.name = name;
  }
}

/** Refers to environment variable `name` of the server process (rendered `$name`). */
export function envRef(name: string): EnvRef {
  return new EnvRef(name);
}

/** A value in a nats-server config. `undefined` map entries are omitted. */
export type NatsConfigValue = string | number | boolean | EnvRef | NatsConfigValue[] | NatsConfigMap;

/** A nats-server config block (`{ key: value }`). */
export interface NatsConfigMap {
  [key: string]: NatsConfigValue | undefined;
}

/** A whole nats-server config file as a plain object. */
export type NatsConfig = NatsConfigMap;

const BARE_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
const INDENT = "  ";

function isMap(v: unknown): v is NatsConfigMap {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof EnvRef);
}

function renderString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const code = ch.codePointAt(0) ?? 0;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    // The nats-server lexer knows \xHH for arbitrary bytes; other control
    // characters raw would end or corrupt the line.
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return out + '"';
}

function renderKey(key: string, path: string): string {
  if (key === "") throw new NatsConfigError(`empty key at ${path || "top level"}`);
  return BARE_KEY.test(key) ? key : renderString(key);
}

function renderValue(v: NatsConfigValue, depth: number, path: string): string {
  if (v instanceof EnvRef) return `$${v.name}`;
  switch (typeof v) {
    case "string":
      return renderString(v);
    case "boolean":
      return v ? "true" : "false";
    case "number":
      if (!Number.isFinite(v)) throw new NatsConfigError(`${path}: ${v} is not a finite number`);
      return String(v);
  }
  if (Array.isArray(v)) {
    if (v.length === 0) return "[]";
    const pad = INDENT.repeat(depth + 1);
    const items = v.map((item, i) => `${pad}${renderValue(item, depth + 1, `${path}[${i}]`)}`);
    return `[\n${items.join("\n")}\n${INDENT.repeat(depth)}]`;
  }
  if (isMap(v)) {
    const body = renderEntries(v, depth + 1, path);
    return body ? `{\n${body}\n${INDENT.repeat(depth)}}` : "{}";
  }
  throw new NatsConfigError(`${path}: unsupported value ${String(v)}`);
}

function renderEntries(map: NatsConfigMap, depth: number, path: string): string {
  const pad = INDENT.repeat(depth);
  const lines: string[] = [];
  for (const [key, value] of Object.entries(map)) {
    if (value === undefined) continue;
    const at = path ? `${path}.${key}` : key;
    lines.push(`${pad}${renderKey(key, at)}: ${renderValue(value, depth, at)}`);
  }
  return lines.join("\n");
}

/**
 * Serializes a config object to nats-server config syntax: nested maps,
 * arrays, double-quoted escaped strings, numbers, booleans, and `$VAR`
 * references from {@link envRef}. Strings are always quoted, so a value that
 * happens to start with `$` is never substituted by the server.
 *
 * @throws NatsConfigError for non-finite numbers, empty keys, a `server_name`
 * with whitespace, or other values.
 */
export function renderNatsConfig(config: NatsConfig): string {
  const serverName = config.server_name;
  // nats-server 2.15 refuses to start on a name with spaces; saying so here
  // names the field instead of failing later inside the server's log.
  if (typeof serverName === "string" && /\s/.test(serverName)) {
    throw new NatsConfigError(`server_name ${JSON.stringify(serverName)} contains whitespace, which nats-server refuses: use letters, digits, - or _`);
  }
  const body = renderEntries(config, 0, "");
  return body ? `${body}\n` : "";
}

/**
 * Deep-merges config maps: later maps win, nested maps merge key by key,
 * arrays and scalars are replaced, `undefined` leaves the earlier value.
 */
export function mergeNatsConfig(...configs: (NatsConfig | undefined)[]): NatsConfig {
  const out: NatsConfig = {};
  for (const config of configs) {
    if (!config) continue;
    for (const [key, value] of Object.entries(config)) {
      if (value === undefined) continue;
      const prev = out[key];
      out[key] = isMap(prev) && isMap(value) ? mergeNatsConfig(prev, value) : value;
    }
  }
  return out;
}
