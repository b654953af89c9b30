import { describe, expect, it } from "vitest";
import { printPaged } from "./paged-output.js";
import { recordingIo } from "./test-io.js";

interface Page {
  items: Array<{ id: string; name: string }>;
  next_cursor?: string;
}

// Three pages; "b" changed during the listing and comes again on the last.
const pages: Record<string, Page> = {
  start: { items: [{ id: "a", name: "A" }, { id: "b", name: "B" }], next_cursor: "c1" },
  c1: { items: [{ id: "c", name: "C" }], next_cursor: "c2" },
  c2: { items: [{ id: "b", name: "B2" }, { id: "d", name: "D" }] },
};

function list(requested: string[]) {
  return {
    fetch: async (cursor: string | undefined) => {
      requested.push(cursor ?? "start");
      return pages[cursor ?? "start"] as Page;
    },
    items: (p: Page) => p.items,
    key: (i: { id: string }) => i.id,
    header: ["ID", "NAME"],
    row: (i: { id: string; name: string }) => [i.id, i.name],
  };
}

describe("printPaged", () => {
  it("follows the cursor to the last page and prints each entry once, the header once", async () => {
    const rec = recordingIo({ env: {}, cwd: "/tmp" });
    const requested: string[] = [];
    await printPaged(rec, false, list(requested));
    expect(requested).toEqual(["start", "c1", "c2"]);
    const lines = rec.stdout.join("\n").split("\n");
    expect(lines.filter((l) => l.startsWith("ID"))).toHaveLength(1);
    expect(lines.map((l) => l.split(/\s+/)[0])).toEqual(["ID", "a", "b", "c", "d"]);
  });

  it("--json writes one JSON array, entries once", async () => {
    const rec = recordingIo({ env: {}, cwd: "/tmp" });
    await printPaged(rec, true, list([]));
    expect(JSON.parse(rec.stdout.join("\n"))).toEqual([
      { id: "a", name: "A" },
      { id: "b", name: "B" },
      { id: "c", name: "C" },
      { id: "d", name: "D" },
    ]);
  });
});
