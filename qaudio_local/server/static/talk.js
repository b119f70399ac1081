// Talk: a conversation through POST /v1/chat/completions, streamed, with audio parts.
import { api, clearError, events, isAbort, server, showError } from "./api.js";
import { Microphone, base64, fileForServer, wavBytes } from "./audio.js";

const $ = (id) => document.getElementById(id);
const history = []; // the OpenAI messages sent so far
let pending = []; // attachments of the next turn: {name, bytes, format, url}
let running = null; // the AbortController of the answer being streamed
let mic = null;
let recordings = 0;
const HOLD_MS = 600; // a press longer than this is a hold: letting go sends
let lastTurn = null; // the last user turn {text, atts, li}: given back to the composer on an error

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function player(url, label) {
  const a = el("audio");
  a.controls = true;
  a.preload = "metadata";
  a.src = url;
  a.setAttribute("aria-label", label);
  return a;
}

function renderPending() {
  const list = $("talk-attachments");
  list.replaceChildren();
  pending.forEach((att, i) => {
    const li = el("li");
    li.append(el("span", "name", att.name), player(att.url, `Play ${att.name}`));
    const rm = el("button", "small", "Remove");
    rm.type = "button";
    rm.setAttribute("aria-label", `Remove ${att.name}`);
    rm.addEventListener("click", () => {
      pending.splice(i, 1);
      renderPending();
    });
    li.append(rm);
    list.append(li);
  });
}

async function attach(files) {
  for (const file of files) {
    try {
      const { bytes, format } = await fileForServer(file);
      pending.push({ name: file.name, bytes, format, url: URL.createObjectURL(file) });
    } catch (err) {
      showError(err);
    }
  }
  renderPending();
}

function updateButtons() {
  $("talk-stop").disabled = !running;
  $("talk-send").disabled = !!running;
  $("talk-retry").disabled = !!running || !history.some((m) => m.role === "user");
  $("talk-empty").hidden = history.length > 0;
}

function userTurn(text, atts) {
  const li = el("li", "turn user");
  li.append(el("p", "who", "You"));
  if (text) li.append(el("p", "text", text));
  for (const att of atts) {
    const fig = el("div", "clip");
    fig.append(el("span", "name small", att.name), player(att.url, `Play ${att.name}`));
    li.append(fig);
  }
  $("talk-log").append(li);
  lastTurn = { text, atts: [...atts], li };
}

async function send(event) {
  if (event) event.preventDefault();
  if (running) return;
  const text = $("talk-input").value.trim();
  if (!text && !pending.length) {
    showError("Type a message or attach audio first.");
    return;
  }
  const content = [];
  if (text) content.push({ type: "text", text });
  for (const att of pending) {
    content.push({ type: "input_audio", input_audio: { data: base64(att.bytes), format: att.format } });
  }
  history.push({ role: "user", content });
  userTurn(text, pending);
  $("talk-input").value = "";
  pending = [];
  renderPending();
  await answer();
}

async function answer() {
  clearError();
  const li = el("li", "turn assistant");
  const out = el("p", "text", "");
  const stats = el("p", "stats small muted");
  li.append(el("p", "who", "Model"), out, stats);
  li.setAttribute("aria-busy", "true");
  $("talk-log").append(li);
  running = new AbortController();
  updateButtons();
  let text = "";
  let stopped = false;
  try {
    const resp = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        model: server.model || undefined,
        messages: history,
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: Number($("talk-max").value) > 0 ? Number($("talk-max").value) : undefined,
      }),
      signal: running.signal,
    });
    for await (const chunk of events(resp, running.signal)) {
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        text += delta.content;
        out.textContent = text;
        li.scrollIntoView({ block: "end" });
      }
      if (chunk.usage) stats.textContent = usageLine(chunk.usage);
    }
  } catch (err) {
    if (isAbort(err)) {
      stopped = true;
    } else {
      li.remove();
      if (history.length && history[history.length - 1].role === "user" && lastTurn) {
        history.pop(); // the turn goes back to the composer, to be sent again or changed
        lastTurn.li.remove();
        $("talk-input").value = lastTurn.text;
        pending = lastTurn.atts;
        renderPending();
        lastTurn = null;
      }
      showError(err);
    }
  } finally {
    running = null;
    li.removeAttribute("aria-busy");
  }
  if (li.isConnected) {
    if (stopped) stats.textContent = "stopped" + (stats.textContent ? ` · ${stats.textContent}` : "");
    history.push({ role: "assistant", content: text });
    li.dataset.done = stopped ? "stopped" : "done";
  }
  updateButtons();
}

export function usageLine(u) {
  const cached = (u.prompt_tokens_details && u.prompt_tokens_details.cached_tokens) || 0;
  const computed = u.prompt_tokens - cached;
  return `prompt ${u.prompt_tokens} tokens: ${cached} reused from the cache, ${computed} computed · answer ${u.completion_tokens} tokens`;
}

function stop() {
  if (running) running.abort();
}

async function retry() {
  if (running) return;
  const log = $("talk-log");
  if (history.length && history[history.length - 1].role === "assistant") {
    history.pop();
    log.lastElementChild.remove();
  }
  await answer();
}

function clear() {
  if (running) running.abort();
  history.length = 0;
  $("talk-log").replaceChildren();
  clearError();
  updateButtons();
}

export async function toggleMic() {
  const button = $("talk-mic");
  const status = $("talk-rec-status");
  if (!mic) {
    mic = new Microphone(16000, true, () => {
      status.textContent = `Recording: ${mic.seconds.toFixed(1)} s (Record again or Alt+M to stop and send)`;
    });
    try {
      await mic.start();
    } catch (err) {
      mic = null;
      showError(err);
      return;
    }
    button.setAttribute("aria-pressed", "true");
    button.textContent = "Stop recording";
    status.textContent = "Recording…";
    return;
  }
  const m = mic;
  mic = null;
  const samples = await m.stop();
  button.setAttribute("aria-pressed", "false");
  button.textContent = "Record";
  status.textContent = "";
  if (samples.length < 1600) {
    showError("The recording is empty: the microphone gave no sound.");
    return;
  }
  recordings += 1;
  const bytes = wavBytes(samples, 16000);
  const name = `recording ${recordings} (${(samples.length / 16000).toFixed(1)} s)`;
  pending.push({ name, bytes, format: "wav", url: URL.createObjectURL(new Blob([bytes], { type: "audio/wav" })) });
  renderPending();
  await send();
}

export function setupTalk() {
  $("talk-form").addEventListener("submit", send);
  $("talk-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
  });
  $("talk-file").addEventListener("change", async (e) => {
    await attach([...e.target.files]);
    e.target.value = "";
  });
  const view = $("view-talk");
  view.addEventListener("dragover", (e) => {
    e.preventDefault();
    view.classList.add("dragging");
  });
  view.addEventListener("dragleave", () => view.classList.remove("dragging"));
  view.addEventListener("drop", (e) => {
    e.preventDefault();
    view.classList.remove("dragging");
    attach([...e.dataTransfer.files]);
  });
  // the microphone button: a click toggles, holding it records until it is let go
  // (a keyboard's Enter or Space arrives as a click with no pointer: a toggle)
  const micButton = $("talk-mic");
  let heldSince = 0;
  micButton.addEventListener("pointerdown", () => {
    heldSince = mic ? 0 : performance.now();
    toggleMic();
  });
  micButton.addEventListener("pointerup", () => {
    if (mic && heldSince && performance.now() - heldSince > HOLD_MS) toggleMic();
    heldSince = 0;
  });
  micButton.addEventListener("click", (e) => {
    if (e.detail === 0) toggleMic();
  });
  $("talk-stop").addEventListener("click", stop);
  $("talk-retry").addEventListener("click", retry);
  $("talk-clear").addEventListener("click", clear);
  updateButtons();
}
