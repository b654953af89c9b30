import { runServiceProcess } from "@unibus/kit";
import { healthzEntry } from "./entry.js";

await runServiceProcess([{ entry: healthzEntry, env: process.env }]);
