/**
 * Live-frame freshness owned by the client, not by one subscription
 * (contracts/specs/frames.md §Freshness). Threat: a member republishes an old
 * frame of someone else; a subscription that starts with an empty replay
 * window would take it as new. Here the replay windows of every (room,
 * sender, epoch) live as long as the client, across resubscribes and Room
 * objects, and a live frame's first counter (the sender's clock in µs) must
 * be within {@link FreshnessLimits.liveSkewMs} of the receiver's clock, which
 * bounds what a new client (with empty windows) can be fooled by.
 */
import { ReplayWindow } from "./replay-window.js";

/** Freshness bounds of live frames. */
export const FreshnessLimits = {
  /** A live frame's counter (µs since the epoch, frames.md §Counters) may differ from the receiver's clock by this much. */
  liveSkewMs: 5 * 60_000,
  /** Reordering tolerated per (sender, epoch), in message counters. */
  windowCounters: 8192,
  /** Windows kept per client; the oldest is dropped beyond this (the clock check still bounds a replay to liveSkewMs). */
  maxWindows: 4096,
} as const;

/** Replay windows per (room, sender key, epoch) for one client's live subscriptions. */
export class ReplayGuard {
  readonly #windows = new Map<string, ReplayWindow>();

  constructor(readonly now: () => number = Date.now) {}

  /** The window of `id` (`room/senderHex/epoch`), created empty on first use. */
  window(id: string): ReplayWindow {
    let w = this.#windows.get(id);
    if (w === undefined) {
      if (this.#windows.size >= FreshnessLimits.maxWindows) this.#windows.delete(this.#windows.keys().next().value!);
      w = new ReplayWindow(FreshnessLimits.windowCounters);
      this.#windows.set(id, w);
    }
    return w;
  }

  /** True when a live frame's first counter is within the skew bound of this receiver's clock. */
  timely(counter: number): boolean {
    return Math.abs(counter / 1000 - this.now()) <= FreshnessLimits.liveSkewMs;
  }
}
