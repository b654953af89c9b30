/** What a prom-client counter or gauge answers to `get()`, as far as tests read it. */
export interface MetricReading {
  get(): Promise<{ values: ReadonlyArray<{ value: number; labels: Partial<Record<string, string | number>> }> }>;
}

/**
 * The sum of a metric's series whose labels include `labels` (all series when
 * none are given); 0 before its first increment. Tests compare it before and
 * after an action, since the process's registry is shared across tests.
 */
export async function counterValue(metric: MetricReading, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await metric.get();
  return values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((n, v) => n + v.value, 0);
}
