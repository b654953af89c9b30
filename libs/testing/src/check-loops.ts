/** What checks started after a write's acknowledgement answered: the old rights, the new ones, or a refusal (a rejection). */
export interface Verdicts {
  old: number;
  current: number;
  refused: number;
}

/**
 * Runs `check` in `loops` concurrent loops until `stop()`, for the
 * paused-leader tests: a check counts only if it started after the write's
 * acknowledgement (`ackedAt`, +∞ until then), so checks in flight across a
 * resume are judged by what they may answer.
 */
export function checkLoops(check: () => Promise<"old" | "current">, loops: number, ackedAt: () => number): { verdicts: Verdicts; stop(): Promise<void> } {
  const verdicts: Verdicts = { old: 0, current: 0, refused: 0 };
  let running = true;
  const all = Promise.all(
    Array.from({ length: loops }, async () => {
      while (running) {
        const started = performance.now();
        const verdict = await check().catch(() => "refused" as const);
        if (started > ackedAt()) verdicts[verdict]++;
      }
    }),
  );
  return {
    verdicts,
    async stop() {
      running = false;
      await all;
    },
  };
}
