import client from "prom-client";

/** Names of the callout's counters in the process's default prom-client registry (served at `/metrics`). */
export const CalloutMetric = {
  logins: "unibus_callout_logins_total",
  denialCacheHits: "unibus_callout_denial_cache_hits_total",
  auditDropped: "unibus_callout_audit_dropped_total",
  leaseRenewals: "unibus_callout_lease_renewals_total",
  leaseHeld: "unibus_callout_lease_held",
  leaseBarriers: "unibus_callout_lease_barriers_total",
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

/** Whether this process's callout holds its login lease now; set by the lease runner while it runs. */
let leaseHeldNow: (() => boolean) | undefined;

/** Sets what {@link CalloutMetric.leaseHeld} reads at each scrape (the latest lease runner started). */
export function reportLeaseHeld(heldNow: () => boolean): void {
  leaseHeldNow = heldNow;
}

/** The runner that reported `heldNow` stopped: the gauge reads 0 unless another runner reported since. */
export function stopReportingLeaseHeld(heldNow: () => boolean): void {
  if (leaseHeldNow === heldNow) leaseHeldNow = undefined;
}

// Read at scrape time, so a lease that ran out between renewals shows as 0.
function leaseGauge(): client.Gauge {
  const existing = client.register.getSingleMetric(CalloutMetric.leaseHeld);
  if (existing !== undefined) return existing as client.Gauge;
  return new client.Gauge({
    name: CalloutMetric.leaseHeld,
    help: "Whether the auth callout holds its login lease (1: logins answered from memory) or not (0: every login fenced)",
    collect() {
      this.set(leaseHeldNow?.() === true ? 1 : 0);
    },
  });
}

/** The callout's counters and gauges. */
export const calloutMetrics = {
  /** Logins by `result` (`allowed`/`denied`) and `reason` (an audit reason code; `none` when allowed). */
  logins: counter(CalloutMetric.logins, "Logins decided by the auth callout, by result and denial reason", ["result", "reason"] as const),
  /** Refusals answered from the denial cache (no signature check, no directory read). */
  denialCacheHits: counter(CalloutMetric.denialCacheHits, "Login refusals answered from the denial cache", [] as const),
  /** Audit records not written (queue full or the stream refused them); the login was still refused. */
  auditDropped: counter(CalloutMetric.auditDropped, "Denial audit records dropped", ["cause"] as const),
  /** Login-lease renewals by `result` (`held`: logins answered from memory until the next; `failed`: every login fenced). */
  leaseRenewals: counter(CalloutMetric.leaseRenewals, "Login-lease renewals by the auth callout, by result", ["result"] as const),
  /** 1 while the login lease holds, read at each scrape; a replica stuck at 0 fences every login. */
  leaseHeld: leaseGauge(),
  /** Membership's barrier requests by `result`: `answered` (applied), `unanswered` (not applied within a lease, or too many waiting), `malformed`. */
  leaseBarriers: counter(CalloutMetric.leaseBarriers, "Lease barrier requests from membership, by result", ["result"] as const),
};
