/**
 * How every bench prints a case: the unibus figure, the raw NATS figure
 * measured in the same run, and their ratio. The machine is shared and noisy,
 * so only the ratio means much; the absolute numbers are there to read it.
 */
export interface BenchCase {
  /** Short id, e.g. "P0 kit echo, 64 in flight". */
  readonly name: string;
  readonly unit: string;
  readonly unibus: number;
  readonly raw: number;
  /** The ratio (or, for latencies, the bound) the issue asks for, printed beside the measured one. */
  readonly goal?: string;
  /** true when a smaller figure is better (latencies): the ratio is raw ÷ unibus. */
  readonly lowerIsBetter?: boolean;
}

export function ratio(c: BenchCase): number {
  return c.lowerIsBetter ? c.raw / c.unibus : c.unibus / c.raw;
}

const fmt = (n: number): string => (n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(2));

export function printCase(c: BenchCase): void {
  const goal = c.goal ? `  (goal ${c.goal})` : "";
  console.log(
    `${c.name.padEnd(44)} unibus ${fmt(c.unibus).padStart(9)} ${c.unit}  raw ${fmt(c.raw).padStart(9)} ${c.unit}  ratio ${ratio(c).toFixed(2)}${goal}`,
  );
}

/** Nearest-rank percentile `p` (0–100) of `samples`; NaN when there are none. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1]!;
}

/** Runs `op` one at a time for `seconds`; returns operations per second. */
export async function sequentialRate(seconds: number, op: (i: number) => Promise<unknown>): Promise<number> {
  const end = performance.now() + seconds * 1000;
  const start = performance.now();
  let n = 0;
  while (performance.now() < end) await op(n++);
  return n / ((performance.now() - start) / 1000);
}

/** Keeps `inFlight` operations outstanding for `seconds`; returns operations per second. */
export async function parallelRate(seconds: number, inFlight: number, op: (i: number) => Promise<unknown>): Promise<number> {
  const start = performance.now();
  const end = start + seconds * 1000;
  let n = 0;
  const lane = async (): Promise<void> => {
    while (performance.now() < end) await op(n++);
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  return n / ((performance.now() - start) / 1000);
}

/** The number after `--name` on this process's command line, or `fallback` (for running one bench file on its own). */
export function numberArg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
