import { runServiceProcess } from "@unibus/kit";
import { replicaGatewayEntry } from "./entry.js";

await runServiceProcess([{ entry: replicaGatewayEntry, env: process.env }]);
