// Process entry of the `unibus` bin: the only module that sets the exit code.
import { processIo } from "./io.js";
import { runCli } from "./router.js";

process.exitCode = await runCli(process.argv.slice(2), processIo());
