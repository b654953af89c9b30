import { Writable } from "node:stream";

/** What {@link logLineSink} returns: the stream to log into and the lines it has parsed so far. */
export interface LogLineSink {
  /** Give it to a JSON-lines logger, e.g. `pino({ level: "debug" }, sink)`. */
  readonly sink: Writable;
  /** Every non-blank line written, parsed, in order. */
  readonly lines: Array<Record<string, unknown>>;
}

/** A stream that keeps a JSON-lines logger's output parsed, so a test can assert on what was logged. */
export function logLineSink(): LogLineSink {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { sink, lines };
}
