// The same corpus through Twilio's published segment calculator (npm: sms-segments-calculator),
// for the side-by-side in bench/segments_bench.py. Usage: node segments_compare.mjs MODULE_DIR CORPUS.json ROUNDS
// Prints JSON: {"rate": texts per second (best round), "results": [[encoding, segments], ...]}.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const [moduleDir, corpusPath, roundsArg] = process.argv.slice(2);
const require = createRequire(join(moduleDir, "package.json"));
const { SegmentedMessage } = require("sms-segments-calculator");
const texts = JSON.parse(readFileSync(corpusPath, "utf8"));
const rounds = Number(roundsArg || 3);

const results = texts.map((text) => {
  const message = new SegmentedMessage(text);
  return [message.encodingName, message.segmentsCount];
});
let best = Infinity;
for (let round = 0; round < rounds; round += 1) {
  const started = process.hrtime.bigint();
  for (const text of texts) {
    new SegmentedMessage(text).segmentsCount;
  }
  best = Math.min(best, Number(process.hrtime.bigint() - started) / 1e9);
}
process.stdout.write(JSON.stringify({ rate: texts.length / best, results }));
