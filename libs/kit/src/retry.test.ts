import { describe, expect, it } from "vitest";
import { retry } from "./retry.js";

describe("retry", () => {
  it("retries a failing operation until it succeeds, reporting each retry", async () => {
    const retried: number[] = [];
    const result = await retry(
      async (attempt) => {
        if (attempt < 3) throw new Error(`not yet ${attempt}`);
        return attempt;
      },
      { budgetMs: 5_000, delayMs: 1, onRetry: (_err, n) => void retried.push(n) },
    );
    expect(result).toBe(3);
    expect(retried).toEqual([1, 2]);
  });

  it("rethrows the last error once the budget is spent", async () => {
    let attempts = 0;
    const started = Date.now();
    const err = await retry(
      async (attempt) => {
        attempts = attempt;
        throw new Error(`fail ${attempt}`);
      },
      { budgetMs: 50, delayMs: (n) => n * 5 },
    ).catch((e: unknown) => e);
    expect(attempts).toBeGreaterThan(1);
    expect((err as Error).message).toBe(`fail ${attempts}`);
    expect(Date.now() - started).toBeGreaterThanOrEqual(50);
  });

  it("rethrows an error that is not retryable at once", async () => {
    let attempts = 0;
    await expect(
      retry(
        async () => {
          attempts++;
          throw new Error("permanent");
        },
        { budgetMs: 5_000, delayMs: 1, retryable: (err) => (err as Error).message !== "permanent" },
      ),
    ).rejects.toThrow("permanent");
    expect(attempts).toBe(1);
  });
});
