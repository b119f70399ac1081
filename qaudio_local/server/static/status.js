// What runs here: GET /v1/status, read again every 2 s while the view is shown.
import { api, server, showError } from "./api.js";

const $ = (id) => document.getElementById(id);
let timer = null;

function facts(dl, rows) {
  dl.replaceChildren();
  for (const [name, value] of rows) {
    if (value === undefined || value === null || value === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    dd.dataset.name = name;
    dl.append(dt, dd);
  }
}

export async function loadStatus() {
  const s = await (await api("/v1/status")).json();
  server.model = s.model;
  $("model-name").textContent = s.model;
  return s;
}

function gpuLayers(s) {
  if (s.gpu_layers === undefined) return undefined;
  return `${s.gpu_layers} of ${s.n_layers + 1} (${s.gpu_offload ? "this build can offload" : "CPU-only build"})`;
}

export async function refreshStatus() {
  let s;
  try {
    s = await loadStatus();
  } catch (err) {
    showError(err);
    return;
  }
  facts($("st-facts"), [
    ["Model", s.model],
    ["Text model file", s.text_model],
    ["Quantization", s.quantization],
    ["Projector", s.projector && `${s.projector} (${s.projector_file}, on the ${s.projector_on_gpu ? "GPU" : "CPU"})`],
    ["Backend", s.backend && `${s.backend} · llama-cpp-python ${s.llama_cpp_python}`],
    ["GPU layers", gpuLayers(s)],
    ["Context", s.n_ctx && `${s.n_ctx} tokens, KV cache ${s.kv_type}`],
    ["Sequences", s.sequences],
    ["Audio path", s.audio_path],
    ["Model state", `${s.model_state}${s.expires_in !== null ? `, unloads in ${s.expires_in} s when idle` : ""} (keep-alive ${s.keep_alive})`],
  ]);
  const e = s.engine;
  facts($("st-live"), [
    ["Tokens/s", e ? e.tokens_per_s : "(model not loaded)"],
    ["Sequences busy", `${s.busy} of ${s.parallel}`],
    ["Queued", `${s.queued} (at most ${s.max_queue})`],
    ["Live sessions", `${s.sessions} of ${s.max_sessions}`],
    ["KV cells in use", e && `${e.cells_used} of ${e.n_ctx}`],
    ["Requests done", e && e.requests_done],
    ["Prompt positions reused", e && e.positions_reused],
  ]);
  $("st-plan").textContent = s.plan
    ? s.plan.lines.join("\n")
    : "Nothing was planned: the model was given as files (--model-file), loaded as they are.";
}

export function statusShown(shown) {
  clearInterval(timer);
  timer = null;
  if (shown) {
    refreshStatus();
    timer = setInterval(refreshStatus, 2000);
  }
}
