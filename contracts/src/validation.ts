import { Ajv2020 } from "ajv/dist/2020.js";
import type { ErrorObject } from "ajv/dist/2020.js";
import * as ajvFormats from "ajv-formats";
import { schemas as contractSchemas } from "./generated/schemas.js";

/** A JSON Schema document, as data. */
export type JsonSchema = Readonly<Record<string, unknown>>;

/** Outcome of validating one value; `path` and `message` are safe to show a caller. */
export type SchemaValidationResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly path: string; readonly message: string };

/** A compiled validator for one schema. */
export type ValidateFn = (value: unknown) => SchemaValidationResult;

// ajv-formats is CommonJS; its plugin is the module itself or its default export
// depending on the loader, so take whichever is a function.
const addFormats = (typeof ajvFormats.default === "function" ? ajvFormats.default : ajvFormats) as unknown as (ajv: Ajv2020) => Ajv2020;

/**
 * Builds the ajv instance every unibus validator uses. Strict mode rejects
 * schemas with unknown keywords, and no coercion, defaults or removal means a
 * value is accepted exactly as sent or not at all.
 */
export function createSchemaAjv(documents: Readonly<Record<string, JsonSchema>>): Ajv2020 {
  const ajv = new Ajv2020({
    strict: true,
    allErrors: false,
    coerceTypes: false,
    useDefaults: false,
    removeAdditional: false,
    validateFormats: true,
  });
  addFormats(ajv);
  for (const [id, schema] of Object.entries(documents)) {
    ajv.addSchema(schema, id);
  }
  return ajv;
}

// Property names come from the caller, so they are reduced to a safe alphabet
// and length before they appear in a reply or a log line.
function safePointer(pointer: string): string {
  const clean = pointer.replace(/[^A-Za-z0-9_~./-]/g, "?");
  return clean.length > 128 ? `${clean.slice(0, 125)}...` : clean || "/";
}

function describe(error: ErrorObject): { path: string; message: string } {
  let path = error.instancePath;
  if (error.keyword === "additionalProperties") {
    path += `/${String((error.params as { additionalProperty?: unknown }).additionalProperty)}`;
    return { path: safePointer(path), message: "unknown field" };
  }
  if (error.keyword === "required") {
    path += `/${String((error.params as { missingProperty?: unknown }).missingProperty)}`;
    return { path: safePointer(path), message: "required field is missing" };
  }
  return { path: safePointer(path), message: (error.message ?? "is invalid").slice(0, 200) };
}

/**
 * The set of schemas a process validates against: every contract schema, plus
 * any extra documents (tests use this for their own schemas). Validators are
 * compiled on first request of an id, so callers compile them once at start.
 */
export class SchemaRegistry {
  readonly #ajv: Ajv2020;
  readonly #ids: Set<string>;

  constructor(extra: Readonly<Record<string, JsonSchema>> = {}) {
    const all: Record<string, JsonSchema> = { ...contractSchemas, ...extra };
    this.#ajv = createSchemaAjv(all);
    this.#ids = new Set(Object.keys(all));
  }

  /** True if a schema with this id is registered. */
  has(id: string): boolean {
    return this.#ids.has(id);
  }

  /** Compiles the validator for `id`; throws if the id is unknown. */
  validator(id: string): ValidateFn {
    const compiled = this.#ajv.getSchema(id);
    if (!this.#ids.has(id) || compiled === undefined) {
      throw new Error(`unknown schema id: ${id}`);
    }
    return (value: unknown) => {
      if (compiled(value)) return { ok: true };
      const first = compiled.errors?.[0];
      return first === undefined ? { ok: false, path: "/", message: "is invalid" } : { ok: false, ...describe(first) };
    };
  }
}
