import { runServiceProcess } from "@unibus/kit";
import { keysEntry } from "./entry.js";

await runServiceProcess([{ entry: keysEntry, env: process.env }]);
