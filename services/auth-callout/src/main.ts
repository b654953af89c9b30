import { runServiceProcess } from "@unibus/kit";
import { authCalloutEntry } from "./entry.js";

await runServiceProcess([{ entry: authCalloutEntry, env: process.env }]);
