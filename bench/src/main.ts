/**
 * `npm run bench`: every benchmark, each printing the unibus figure, the raw
 * NATS figure measured in the same run, and their ratio.
 *
 *   npm run bench [-- --seconds 3]
 */
import { runKitVsRaw } from "./kit-vs-raw.js";
import { printCase } from "./report.js";

const i = process.argv.indexOf("--seconds");
const seconds = i > 0 ? Number(process.argv[i + 1]) : 3;

console.log(`unibus bench: ${seconds} s per case; ratios are against raw NATS in this same run\n`);
for (const c of await runKitVsRaw({ seconds, inFlight: 64 })) printCase(c);
