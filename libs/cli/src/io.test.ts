import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

const IO_MODULE = fileURLToPath(new URL("./io.ts", import.meta.url));

it("ends quietly (exit 0, no stack trace) when the reader of its output goes away, as `| head` does", async () => {
  // Far more output than a pipe buffers, so the write after the reader closes fails with EPIPE.
  const script = `const { processIo } = await import(${JSON.stringify(IO_MODULE)}); const io = processIo(); for (let i = 0; i < 100000; i++) io.out("line " + i + " ".repeat(80)); setTimeout(() => process.exit(7), 5000);`;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  // Read one chunk, then close the pipe like `head -1`.
  await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
  child.stdout.destroy();
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  expect(stderr).not.toMatch(/EPIPE|Unhandled/);
  expect(code).toBe(0);
}, 30_000);
