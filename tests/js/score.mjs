// Scores Qwen3-Reranker prompts with Transformers.js v4, as the model card does:
// AutoTokenizer + AutoModelForCausalLM, logits at the last position, yes/no token ids.
// Usage: node score.mjs MODEL_DIR DTYPE PROMPTS.json  -> JSON [{yes, no, gap, score}] on stdout.
// PROMPTS.json holds full prompt strings (prefix + content + suffix); each is scored on its own.
import fs from "node:fs";
import path from "node:path";
import { env, AutoTokenizer, AutoModelForCausalLM } from "@huggingface/transformers";

const [modelDir, dtype, promptsFile] = process.argv.slice(2);
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(path.resolve(modelDir)) + path.sep;
const name = path.basename(path.resolve(modelDir));

const tokenizer = await AutoTokenizer.from_pretrained(name);
const model = await AutoModelForCausalLM.from_pretrained(name, { dtype, device: "cpu" });
const yes = tokenizer.convert_tokens_to_ids("yes");
const no = tokenizer.convert_tokens_to_ids("no");
const prompts = JSON.parse(fs.readFileSync(promptsFile, "utf8"));
const out = [];
for (const prompt of prompts) {
  const inputs = tokenizer(prompt, { add_special_tokens: false });
  const { logits } = await model(inputs);
  const [, seq, vocab] = logits.dims;
  const last = logits.data.slice((seq - 1) * vocab, seq * vocab);
  const y = Number(last[yes]);
  const n = Number(last[no]);
  const m = Math.max(y, n);
  const score = Math.exp(y - m) / (Math.exp(y - m) + Math.exp(n - m));
  out.push({ yes: y, no: n, gap: y - n, score, tokens: seq });
}
process.stdout.write(JSON.stringify(out) + "\n");
