import client from "prom-client";

/** Names of the callout's counters in the process's default prom-client registry (served at `/metrics`). */
export const CalloutMetric = {
  logins: "unibus_callout_logins_total",
  denialCacheHits: "unibus_callout_denial_cache_hits_total",
  auditDropped: "unibus_callout_audit_dropped_total",
} as const;
/** One of the {@link CalloutMetric} names. */
export type CalloutMetric = (typeof CalloutMetric)[keyof typeof CalloutMetric];

// One counter per name in the default registry, also when a test imports the
// module graph twice (prom-client refuses a second registration).
function counter<L extends string>(name: CalloutMetric, help: string, labelNames: readonly L[]): client.Counter<L> {
  const existing = client.register.getSingleMetric(name);
  if (existing !== undefined) return existing as client.Counter<L>;
  return new client.Counter<L>({ name, help, labelNames });
}

/** The callout's counters. */
export const calloutMetrics = {
  /** Logins by `result` (`allowed`/`denied`) and `reason` (an audit reason code; `none` when allowed). */
  logins: counter(CalloutMetric.logins, "Logins decided by the auth callout, by result and denial reason", ["result", "reason"] as const),
  /** Refusals answered from the denial cache (no signature check, no directory read). */
  denialCacheHits: counter(CalloutMetric.denialCacheHits, "Login refusals answered from the denial cache", [] as const),
  /** Audit records not written (queue full or the stream refused them); the login was still refused. */
  auditDropped: counter(CalloutMetric.auditDropped, "Denial audit records dropped", ["cause"] as const),
};
