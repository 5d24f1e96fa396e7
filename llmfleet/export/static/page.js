// Greedy decoding of /model/<file> with onnxruntime-web, feeding present.N.* back as past_key_values.N.*.
// window.llmfleetGreedy(ids, maxTokens, options) resolves to {tokens, text, backend, first_token_ms,
// per_token_ms}; tests and benchmarks call it through the browser. ?ids=1,2,3&max=8 runs it on load.

const query = new URLSearchParams(location.search);

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const tag = document.createElement("script");
    tag.src = src;
    tag.onload = resolve;
    tag.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.appendChild(tag);
  });
}

// WebGPU only where an adapter exists (headless Chromium has navigator.gpu but usually no adapter).
async function pickBackend() {
  const wanted = query.get("backend");
  if (wanted === "wasm") return "wasm";
  if (navigator.gpu && (await navigator.gpu.requestAdapter().catch(() => null))) return "webgpu";
  if (wanted === "webgpu") throw new Error("backend=webgpu: this browser has no WebGPU adapter");
  return "wasm";
}

async function fetchJson(path, fallback) {
  const response = await fetch(path);
  if (response.ok) return response.json();
  if (fallback !== undefined) return fallback;
  throw new Error(`${path}: HTTP ${response.status}`);
}

const setup = (async () => {
  const backend = await pickBackend();
  await loadScript(backend === "webgpu" ? "vendor/ort.webgpu.min.js" : "vendor/ort.wasm.min.js");
  ort.env.wasm.wasmPaths = new URL("vendor/", location.href).href;
  const meta = await fetchJson("model/export.json");
  const vocab = await fetchJson("model/vocab.json", []);
  return { backend, meta, vocab, sessions: {} };
})();

async function session(state, file) {
  if (!state.sessions[file]) {
    state.sessions[file] = await ort.InferenceSession.create(`model/${file}`,
      { executionProviders: [state.backend] });
  }
  return state.sessions[file];
}

function int64(values, dims) {
  return new ort.Tensor("int64", BigInt64Array.from(values.map(BigInt)), dims);
}

function lastArgmax(logits) {
  const [, seq, vocab] = logits.dims;
  const data = logits.data;
  let best = 0;
  for (let i = 1, base = (seq - 1) * vocab; i < vocab; i++) {
    if (data[base + i] > data[base + best]) best = i;
  }
  return best;
}

async function step(sess, meta, ids, past) {
  const cached = past[0].dims[2];
  const feeds = {
    input_ids: int64(ids, [1, ids.length]),
    attention_mask: int64(new Array(cached + ids.length).fill(1), [1, cached + ids.length]),
    position_ids: int64(ids.map((_, i) => cached + i), [1, ids.length]),
  };
  meta.inputs.slice(3).forEach((name, i) => { feeds[name] = past[i]; });
  const out = await sess.run(feeds);
  return { next: lastArgmax(out.logits), present: meta.outputs.slice(1).map((name) => out[name]) };
}

async function greedy(ids, maxTokens, options = {}) {
  const state = await setup;
  const meta = state.meta;
  const sess = await session(state, options.file || "model.onnx");
  const shape = [1, meta.num_kv_heads, 0, meta.head_dim];
  let past = meta.inputs.slice(3).map(() => new ort.Tensor("float32", new Float32Array(0), shape));
  const tokens = [];
  const perToken = [];
  let start = performance.now();
  let result = await step(sess, meta, ids, past);
  const firstTokenMs = performance.now() - start;
  tokens.push(result.next);
  while (tokens.length < maxTokens) {
    past = result.present;
    start = performance.now();
    result = await step(sess, meta, [tokens[tokens.length - 1]], past);
    perToken.push(performance.now() - start);
    tokens.push(result.next);
  }
  const text = tokens.map((t) => state.vocab[t] ?? `<${t}>`).join("");
  return { tokens, text, backend: state.backend, first_token_ms: firstTokenMs, per_token_ms: perToken };
}

window.llmfleetGreedy = greedy;

async function runFromForm() {
  const status = document.getElementById("status");
  const ids = document.getElementById("ids").value.split(",").map((s) => parseInt(s.trim(), 10));
  const max = parseInt(document.getElementById("max").value, 10);
  status.textContent = "running…";
  try {
    const r = await greedy(ids, max);
    const perToken = r.per_token_ms.length ? r.per_token_ms.reduce((a, b) => a + b) / r.per_token_ms.length : 0;
    status.textContent = `${r.backend}: first token ${r.first_token_ms.toFixed(1)} ms, ` +
      `then ${perToken.toFixed(1)} ms/token`;
    document.getElementById("out").textContent = `${r.text}\n\n[${r.tokens.join(", ")}]`;
  } catch (err) {
    status.textContent = `error: ${err.message}`;
  }
}

document.getElementById("run").addEventListener("click", runFromForm);
setup.then((s) => {
  document.getElementById("status").textContent = `ready (${s.backend})`;
  if (query.get("ids")) {
    document.getElementById("ids").value = query.get("ids");
    if (query.get("max")) document.getElementById("max").value = query.get("max");
    runFromForm();
  }
}).catch((err) => { document.getElementById("status").textContent = `error: ${err.message}`; });
