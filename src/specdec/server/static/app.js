// specdec playground: streams from this server's OpenAI endpoints with the `spec_fates`
// extension and shows each token's fate, rejected drafts, and live speculation stats.
"use strict";

const $ = (id) => document.getElementById(id);
let modelId = null;
let controller = null;

// A server started with --api-key wants `Authorization: Bearer KEY` on /v1/. The page never
// holds the key: on a 401 it asks for it, and keeps it in this tab's sessionStorage.
const KEY_ITEM = "specdec-api-key";

function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY_ITEM);
  const headers = { ...(options.headers || {}), ...(key ? { Authorization: `Bearer ${key}` } : {}) };
  return fetch(path, { ...options, headers }).then((r) => {
    if (r.status === 401) {
      sessionStorage.removeItem(KEY_ITEM);
      $("key-form").hidden = false;
      $("api-key").focus();
    }
    return r;
  });
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY_ITEM, $("api-key").value.trim());
  $("api-key").value = "";
  $("key-form").hidden = true;
  loadModel();
});

async function loadModel() {
  try {
    const r = await api("/v1/models");
    if (r.status === 401) {
      $("model-info").textContent = "this server wants an API key";
      return;
    }
    const card = (await r.json()).data[0];
    modelId = card.id;
    $("model-info").textContent = `${card.id} · speculative: ${card.speculative} · context ${card.max_model_len}`;
  } catch (e) {
    $("model-info").textContent = "server unreachable";
  }
}

// One tokens/s everywhere (the stats card and the compare table): decode tokens per decode
// second, from the first token to the last, as the server's and the CLI's tokens_per_second.
function tokensPerSecond(tokens, decodeSeconds) {
  return decodeSeconds > 0 && tokens > 1 ? (tokens - 1) / decodeSeconds : NaN;
}

// Special tokens (<|im_end|>, <|endoftext|>, ...) end a turn; they are not text.
function isSpecial(text) {
  return /^<\|[^<>|]*\|>$/.test(text.trim());
}

function requestBody(speculative, seed = null) {
  const body = {
    model: modelId,
    stream: true,
    stream_options: { include_usage: true },
    spec_fates: true,
    speculative,
    temperature: Number($("temperature").value),
    top_p: Number($("top_p").value),
    top_k: Number($("top_k").value),
    max_tokens: Number($("max_tokens").value),
  };
  if (seed !== null) body.seed = seed;
  else if ($("seed").value !== "") body.seed = Number($("seed").value);
  const prompt = $("prompt").value;
  if ($("mode").value === "chat") {
    body.messages = [];
    if ($("system").value) body.messages.push({ role: "system", content: $("system").value });
    body.messages.push({ role: "user", content: prompt });
  } else {
    body.prompt = prompt;
  }
  return body;
}

// One run: stream, render and measure. Returns {seconds, tokens, usage}.
async function run(speculative, render = true, seed = null) {
  const chat = $("mode").value === "chat";
  const path = chat ? "/v1/chat/completions" : "/v1/completions";
  controller = new AbortController();
  const stats = { texts: [], tokens: 0, steps: 0, drafts: 0, drafted: 0, accepted: 0, lengths: [], reached: [], acceptedAt: [] };
  const output = $("output");
  if (render) {
    output.textContent = "";
    drawPositions(stats);
    drawChart(stats);
  }
  const start = performance.now();
  let first = null;
  let usage = null;
  const response = await api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(requestBody(speculative, seed)),
    signal: controller.signal,
  });
  if (!response.ok) {
    const err = await response.json().catch(() => ({ error: { message: response.statusText } }));
    throw new Error(err.error ? err.error.message : response.statusText);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const event = JSON.parse(line.slice(6));
      if (event.error) throw new Error(event.error.message);
      if (event.usage) usage = event.usage;
      if (!event.spec) continue;
      first = first || performance.now();
      observe(stats, event.spec);
      if (render) {
        renderStep(output, event.spec);
        updateStats(stats, (performance.now() - first) / 1000, (performance.now() - start) / 1000);
      }
    }
  }
  const seconds = (performance.now() - start) / 1000;
  const decodeSeconds = first ? (performance.now() - first) / 1000 : 0;
  if (render) {
    updateStats(stats, decodeSeconds, seconds);
    drawPositions(stats);
    drawChart(stats);
  }
  return { seconds, decodeSeconds, tokens: stats.tokens, usage, stats };
}

function observe(stats, spec) {
  const k = spec.draft_ids.length;
  stats.tokens += spec.fates.length;
  stats.texts.push(...spec.tokens);
  stats.steps += 1;
  stats.lengths.push(spec.num_accepted + 1);
  if (k > 0) {
    stats.drafts += 1;
    stats.drafted += k;
    stats.accepted += spec.num_accepted;
    for (let i = 0; i < k; i++) {
      stats.reached[i] = (stats.reached[i] || 0) + 1;
      stats.acceptedAt[i] = (stats.acceptedAt[i] || 0) + (i < spec.num_accepted ? 1 : 0);
    }
  }
}

function renderStep(output, spec) {
  spec.tokens.forEach((text, i) => {
    if (isSpecial(text)) return;
    const span = document.createElement("span");
    span.className = `tok fate-${spec.fates[i]}`;
    span.textContent = text;
    span.title = spec.fates[i];
    output.appendChild(span);
    if (spec.fates[i] === "recovered") {
      // the drafts this token replaced, from the first rejected one on
      const rejected = spec.draft_tokens.slice(spec.num_accepted).join("");
      if (rejected) {
        const s = document.createElement("span");
        s.className = "tok rejected";
        s.textContent = rejected;
        s.title = "rejected draft";
        output.insertBefore(s, span);
      }
    }
  });
}

function updateStats(stats, decodeSeconds, seconds) {
  $("s-tokens").textContent = stats.tokens;
  const tps = tokensPerSecond(stats.tokens, decodeSeconds);
  $("s-tps").textContent = Number.isFinite(tps) ? tps.toFixed(1) : "–";
  $("s-rate").textContent = stats.drafted ? `${((100 * stats.accepted) / stats.drafted).toFixed(1)}%` : "–";
  $("s-len").textContent = stats.drafts ? (1 + stats.accepted / stats.drafts).toFixed(2) : "–";
  $("s-steps").textContent = `${stats.steps} (${stats.drafts} drafting)`;
  $("s-time").textContent = `${seconds.toFixed(2)} s`;
  if (stats.steps % 4 === 0) {
    drawPositions(stats);
    drawChart(stats);
  }
}

function drawPositions(stats) {
  const box = $("positions");
  box.textContent = "";
  stats.reached.forEach((n, i) => {
    const rate = n ? stats.acceptedAt[i] / n : 0;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.height = `${Math.max(2, rate * 80)}px`;
    bar.title = `position ${i + 1}: ${(100 * rate).toFixed(0)}% of ${n}`;
    const value = document.createElement("em");
    value.className = "value";
    value.textContent = `${(100 * rate).toFixed(0)}%`;
    bar.appendChild(value);
    const label = document.createElement("span");
    label.textContent = i + 1;
    bar.appendChild(label);
    box.appendChild(bar);
  });
}

function drawChart(stats) {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const data = stats.lengths;
  if (!data.length) return;
  const top = Math.max(4, ...data);
  const step = Math.min(8, w / data.length);
  const start = Math.max(0, data.length - Math.floor(w / step));
  ctx.fillStyle = "#99b";
  for (let i = start; i < data.length; i++) {
    const bh = (data[i] / top) * (h - 14);
    ctx.fillRect((i - start) * step, h - bh, Math.max(1, step - 1), bh);
  }
  ctx.fillStyle = "#555";
  ctx.font = "11px sans-serif";
  ctx.fillText(`y: tokens per step, 0..${top}`, 4, 11);
  ctx.fillText(`x: verify steps ${start + 1}..${data.length}`, w - 150, 11);
}

function setBusy(busy, text = "") {
  $("run").disabled = $("compare").disabled = busy;
  $("stop").disabled = !busy;
  $("status").className = "";
  $("status").textContent = text;
}

function fail(e) {
  if (e.name === "AbortError") {
    setBusy(false, "stopped");
  } else {
    setBusy(false, e.message);
    $("status").className = "error";
  }
}

$("run").addEventListener("click", async () => {
  $("compare-result").hidden = true;
  setBusy(true, "generating…");
  try {
    const r = await run($("speculative").checked);
    setBusy(false, `${r.tokens} tokens in ${r.seconds.toFixed(2)} s`);
  } catch (e) {
    fail(e);
  }
});

$("compare").addEventListener("click", async () => {
  setBusy(true, "running with speculation…");
  try {
    // one seed for both runs: with it, speculative output equals plain output token for token
    const seed = $("seed").value !== "" ? Number($("seed").value) : Math.floor(Math.random() * 2 ** 31);
    const spec = await run(true, true, seed);
    setBusy(true, "running without speculation…");
    const plain = await run(false, false, seed);
    const box = $("compare-result");
    box.innerHTML = "";
    const table = document.createElement("table");
    table.innerHTML = "<tr><th></th><th>time</th><th>tokens</th><th>tokens/s</th></tr>";
    for (const [name, r] of [["speculative", spec], ["plain", plain]]) {
      const row = table.insertRow();
      const tps = tokensPerSecond(r.tokens, r.decodeSeconds);
      for (const v of [name, `${r.seconds.toFixed(2)} s`, r.tokens, Number.isFinite(tps) ? tps.toFixed(1) : "–"]) {
        row.insertCell().textContent = v;
      }
    }
    box.appendChild(table);
    const a = spec.stats.texts, b = plain.stats.texts;
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    const verdict = document.createElement("p");
    verdict.id = "compare-verdict";
    verdict.textContent = i === a.length && i === b.length
      ? `identical: ${a.length} tokens, seed ${seed}`
      : `differs at token ${i + 1} (seed ${seed}): speculative ${JSON.stringify(a[i] ?? "(end)")}, plain ${JSON.stringify(b[i] ?? "(end)")}`;
    verdict.className = i === a.length && i === b.length ? "identical" : "differs";
    box.appendChild(verdict);
    const p = document.createElement("p");
    p.textContent = `speedup ${(plain.seconds / spec.seconds).toFixed(2)}x (wall time)`;
    box.appendChild(p);
    box.hidden = false;
    setBusy(false, "compared");
  } catch (e) {
    fail(e);
  }
});

$("stop").addEventListener("click", () => controller && controller.abort());
$("show-rejected").addEventListener("change", (e) => $("output").classList.toggle("show-rejected", e.target.checked));
$("mode").addEventListener("change", () => { $("system-label").hidden = $("mode").value !== "chat"; });
loadModel();
