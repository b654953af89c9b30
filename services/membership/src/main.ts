import { runServiceProcess } from "@unibus/kit";
import { membershipEntry } from "./entry.js";

await runServiceProcess([{ entry: membershipEntry, env: process.env }]);
