import { describe, expect, it } from "vitest";
import { ErrorReason, UnibusError } from "@unibus/contracts";
import type { KeysEpochsReply } from "@unibus/contracts";
import { KeysApi } from "./api.js";

/** A keys service that answers `keys.epochs` from a script of pages, recording each request. */
function scripted(pages: KeysEpochsReply[]): { api: KeysApi; requests: unknown[] } {
  const requests: unknown[] = [];
  let i = 0;
  const send = <T>(_subject: string, body: unknown): Promise<T> => {
    requests.push(body);
    const page = pages[Math.min(i++, pages.length - 1)]!;
    return Promise.resolve(page as T);
  };
  return { api: new KeysApi(send), requests };
}

const current = { epoch: 5, distributor: `U${"A".repeat(55)}`, createdAt: "2026-01-01T00:00:00.000Z", principalsHash: "A".repeat(43) };

describe("KeysApi.epochs pages transparently", () => {
  it("follows next_cursor, joins the pages and keeps the last page's summary", async () => {
    const { api, requests } = scripted([
      { roomId: "r1234567", epochs: [1, 2], current, next_cursor: "e2" },
      { roomId: "r1234567", epochs: [3, 4], current, next_cursor: "e4" },
      { roomId: "r1234567", epochs: [5], current },
    ]);
    expect(await api.epochs("r1234567", { pageLimit: 2 })).toEqual({ roomId: "r1234567", epochs: [1, 2, 3, 4, 5], current });
    expect(requests).toEqual([
      { roomId: "r1234567", limit: 2 },
      { roomId: "r1234567", cursor: "e2", limit: 2 },
      { roomId: "r1234567", cursor: "e4", limit: 2 },
    ]);
  });

  it("refuses pages that go back or promise more with nothing in them, instead of looping", async () => {
    const back = scripted([
      { roomId: "r1234567", epochs: [1, 2], next_cursor: "e2" },
      { roomId: "r1234567", epochs: [1, 2], next_cursor: "e2" },
    ]);
    const err = await back.api.epochs("r1234567").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UnibusError);
    expect((err as UnibusError).reason).toBe(ErrorReason.MalformedReply);

    const empty = scripted([
      { roomId: "r1234567", epochs: [1], next_cursor: "e1" },
      { roomId: "r1234567", epochs: [], next_cursor: "e1" },
    ]);
    await expect(empty.api.epochs("r1234567")).rejects.toThrow(/do not ascend/);
    expect(empty.requests).toHaveLength(2);
  });

  it("an empty last page simply ends the listing", async () => {
    const { api } = scripted([
      { roomId: "r1234567", epochs: [1], next_cursor: "e1" },
      { roomId: "r1234567", epochs: [] },
    ]);
    expect((await api.epochs("r1234567")).epochs).toEqual([1]);
  });
});
