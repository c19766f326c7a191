// Transformers.js v4 engine of `qwen3-rerank bench`: the model card's recipe in Node.
//
// AutoTokenizer + AutoModelForCausalLM on a local folder in the published layout, the chat prompt
// as one string, logits at the last position, softmax over the "yes"/"no" logits. Like the model
// card it scores one prompt per model call (batch 1, no padding), unless --batch N is given (then
// N prompts per call, left padding as the tokenizer config says).
//
// Usage: node bench.mjs SPEC.json  ->  one JSON line on stdout.
// SPEC: {model_dir, dtype, calls: [[prompt, ...], ...], warmup: [prompt, ...], repeat, batch, threads}
// where a call holds the full prompts (prefix + content + suffix) of one query's documents.
import fs from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { env, AutoTokenizer, AutoModelForCausalLM } from "@huggingface/transformers";

const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(path.resolve(spec.model_dir)) + path.sep;
const name = path.basename(path.resolve(spec.model_dir));

const t0 = performance.now();
const tokenizer = await AutoTokenizer.from_pretrained(name);
const options = { dtype: spec.dtype, device: "cpu" };
if (spec.threads) options.session_options = { intraOpNumThreads: spec.threads, interOpNumThreads: 1 };
const model = await AutoModelForCausalLM.from_pretrained(name, options);
const loadSeconds = (performance.now() - t0) / 1000;
const yes = tokenizer.convert_tokens_to_ids("yes");
const no = tokenizer.convert_tokens_to_ids("no");
const batch = Math.max(1, spec.batch || 1);
// Batches read the last position of every row: pad on the left, as the PyTorch recipe does.
if (batch > 1) tokenizer.padding_side = "left";

async function scoreCall(prompts) {
  const scores = [];
  for (let start = 0; start < prompts.length; start += batch) {
    const chunk = prompts.slice(start, start + batch);
    const inputs = tokenizer(chunk, { add_special_tokens: false, padding: chunk.length > 1 });
    const { logits } = await model(inputs);
    const [rows, seq, vocab] = logits.dims;
    for (let r = 0; r < rows; r++) {
      const base = (r * seq + seq - 1) * vocab; // last position (left padding keeps it real)
      const y = Number(logits.data[base + yes]);
      const n = Number(logits.data[base + no]);
      const m = Math.max(y, n);
      scores.push(Math.exp(y - m) / (Math.exp(y - m) + Math.exp(n - m)));
    }
  }
  return scores;
}

if (spec.warmup && spec.warmup.length) await scoreCall(spec.warmup);
const latencies = [];
let pairs = 0;
let firstScores = null;
const start = performance.now();
for (let r = 0; r < (spec.repeat || 1); r++) {
  for (const prompts of spec.calls) {
    const c0 = performance.now();
    const scores = await scoreCall(prompts);
    latencies.push((performance.now() - c0) / 1000);
    pairs += prompts.length;
    if (firstScores === null) firstScores = scores.slice(0, 4);
  }
}
const seconds = (performance.now() - start) / 1000;
process.stdout.write(
  JSON.stringify({
    load_s: loadSeconds,
    seconds,
    pairs,
    latencies_s: latencies,
    peak_rss_mb: process.resourceUsage().maxRSS / 1024,
    first_scores: firstScores,
    batch,
    transformers_js: env.version,
  }) + "\n",
);
