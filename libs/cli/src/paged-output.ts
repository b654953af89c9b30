import { ExitCode } from "./errors.js";
import type { CliIo } from "./io.js";
import { formatTable } from "./table.js";

/** How one list command walks its pages: the fetch, the entries of a page, an entry's identity and table row. */
export interface PagedList<P extends { next_cursor?: string }, T> {
  fetch(cursor: string | undefined): Promise<P>;
  items(page: P): readonly T[];
  key(item: T): string;
  header: readonly string[];
  row(item: T): readonly string[];
}

/**
 * Prints a list page by page as it arrives, so `users list` of 100,000 users
 * starts at once and holds one page at a time. An entry changed during the
 * listing can come again in a later page; it is printed once. `--json` is
 * still one JSON array, written incrementally.
 */
export async function printPaged<P extends { next_cursor?: string }, T>(io: CliIo, json: boolean, list: PagedList<P, T>): Promise<number> {
  const seen = new Set<string>();
  let cursor: string | undefined;
  let first = true;
  if (json) io.out("[");
  do {
    const page = await list.fetch(cursor);
    const fresh = list.items(page).filter((item) => {
      const k = list.key(item);
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
    if (json) {
      for (const item of fresh) {
        io.out(`${first ? "" : ","}${JSON.stringify(item)}`);
        first = false;
      }
    } else if (fresh.length > 0 || first) {
      // Widths are per page; the header is printed once.
      const lines = formatTable([list.header, ...fresh.map((item) => list.row(item))]).split("\n");
      io.out((first ? lines : lines.slice(1)).join("\n"));
      first = false;
    }
    cursor = page.next_cursor;
  } while (cursor !== undefined);
  if (json) io.out("]");
  return ExitCode.ok;
}

/**
 * Every entry of a hash-chained log, read page by page from entry 0: a log
 * is checked whole, so unlike a list it is not printed as it arrives. Stops
 * at an empty page or once past the head the last page named.
 */
export async function readWholeLog<E>(page: (fromSeq: number) => Promise<{ headSeq: number; entries: readonly E[] }>): Promise<E[]> {
  const out: E[] = [];
  for (;;) {
    const next = await page(out.length);
    out.push(...next.entries);
    if (next.entries.length === 0 || out.length > next.headSeq) return out;
  }
}
