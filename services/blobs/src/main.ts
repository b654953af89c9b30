import { runServiceProcess } from "@unibus/kit";
import { blobsEntry } from "./entry.js";

await runServiceProcess([{ entry: blobsEntry, env: process.env }]);
