/**
 * The error `p` rejects with, checked to be a `type`; throws when `p`
 * resolves or rejects with anything else, so a test cannot pass on the wrong
 * failure.
 */
export async function rejectionOf<E extends Error>(p: Promise<unknown>, type: abstract new (...args: never[]) => E): Promise<E> {
  const outcome = await p.then(
    (value: unknown) => ({ resolved: true as const, value }),
    (err: unknown) => ({ resolved: false as const, err }),
  );
  if (outcome.resolved) throw new Error(`expected a rejection with ${type.name}, got a result: ${JSON.stringify(outcome.value)}`);
  if (!(outcome.err instanceof type)) throw new Error(`expected a rejection with ${type.name}, got ${String(outcome.err)}`, { cause: outcome.err });
  return outcome.err;
}
