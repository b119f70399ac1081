// Live captions: the Realtime endpoint (GET /v1/realtime?intent=transcription), PCM16 from
// the microphone at the session's rate; each turn's words as they are decoded, its times
// from the server's speech events; the transcript to download when stopped.
import { api, apiKey, clearError, server, showError } from "./api.js";
import { Microphone, base64, pcm16 } from "./audio.js";
import { clock, download, fullText, toSrt, toTxt, toVtt } from "./formats.js";

const $ = (id) => document.getElementById(id);
const SEND_SECONDS = 0.1; // audio sent in pieces of this length
let ws = null;
let mic = null;
let turns = new Map(); // item_id -> {start, end, text, done, li}
let order = [];
let stopping = false;

function turnOf(id) {
  let t = turns.get(id);
  if (!t) {
    const li = document.createElement("li");
    li.className = "turn-line pending";
    const time = document.createElement("span");
    time.className = "time";
    const text = document.createElement("span");
    text.className = "text";
    li.append(time, text);
    $("cap-turns").append(li);
    t = { start: null, end: null, text: "", done: false, li, time, textEl: text };
    turns.set(id, t);
    order.push(id);
  }
  return t;
}

function draw(t) {
  const start = t.start === null ? "" : clock(t.start);
  const end = t.end === null ? "…" : clock(t.end);
  t.time.textContent = t.start === null ? "" : `${start}–${end} `;
  t.textEl.textContent = t.text || (t.done ? "" : "…");
  t.li.classList.toggle("pending", !t.done);
}

function onEvent(msg) {
  const e = JSON.parse(msg.data);
  switch (e.type) {
    case "session.created":
      startAudio(e.session);
      break;
    case "input_audio_buffer.speech_started": {
      const t = turnOf(e.item_id);
      t.start = e.audio_start_ms / 1000;
      draw(t);
      break;
    }
    case "input_audio_buffer.speech_stopped": {
      const t = turnOf(e.item_id);
      t.end = e.audio_end_ms / 1000;
      draw(t);
      break;
    }
    case "conversation.item.input_audio_transcription.delta": {
      const t = turnOf(e.item_id);
      t.text += e.delta;
      draw(t);
      break;
    }
    case "conversation.item.input_audio_transcription.completed": {
      const t = turnOf(e.item_id);
      t.text = e.transcript;
      t.done = true;
      draw(t);
      t.li.dataset.done = "true";
      break;
    }
    case "conversation.item.input_audio_transcription.failed": {
      const t = turnOf(e.item_id);
      t.done = true;
      t.text = `(not transcribed: ${e.error && e.error.message})`;
      draw(t);
      break;
    }
    case "error":
      if (!stopping) showError(e.error ? e.error.message : "the live session failed");
      break;
    default:
      break;
  }
}

async function startAudio(session) {
  const fmt = session && session.audio && session.audio.input && session.audio.input.format;
  const rate = (fmt && fmt.rate) || 24000;
  const piece = Math.round(rate * SEND_SECONDS);
  let buffered = [];
  let count = 0;
  // live: nothing is kept here, the server has the audio
  mic = new Microphone(rate, false, (chunk) => {
    buffered.push(chunk);
    count += chunk.length;
    if (count >= piece && ws && ws.readyState === WebSocket.OPEN) {
      const all = new Float32Array(count);
      let at = 0;
      for (const c of buffered) {
        all.set(c, at);
        at += c.length;
      }
      buffered = [];
      count = 0;
      ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(pcm16(all)) }));
    }
  });
  try {
    await mic.start();
    $("cap-status").textContent = "Listening… (Stop or Alt+M to end)";
  } catch (err) {
    showError(err);
    stop();
  }
}

async function listen() {
  clearError();
  try {
    await api("/v1/status"); // asks for the key first if the server needs one
  } catch (err) {
    showError(err);
    return;
  }
  turns = new Map();
  order = [];
  stopping = false;
  $("cap-turns").replaceChildren();
  $("cap-downloads").hidden = true;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ intent: "transcription" });
  if (server.model) query.set("model", server.model);
  const protocols = ["realtime"];
  if (apiKey()) protocols.push(`openai-insecure-api-key.${apiKey()}`);
  ws = new WebSocket(`${scheme}//${location.host}/v1/realtime?${query}`, protocols);
  ws.onmessage = onEvent;
  ws.onerror = () => {
    if (!stopping) showError("the live session could not be opened or was cut (is the server busy?)");
  };
  ws.onclose = () => finish();
  const button = $("cap-toggle");
  button.setAttribute("aria-pressed", "true");
  button.textContent = "Stop";
  $("cap-status").textContent = "Connecting…";
}

async function stop() {
  if (stopping) return;
  stopping = true;
  $("cap-status").textContent = "Finishing the last turn…";
  if (mic) {
    await mic.stop();
    mic = null;
  }
  // the turn under way: commit what was said, wait for its words, then close
  if (ws && ws.readyState === WebSocket.OPEN) {
    const pending = () => [...turns.values()].some((t) => !t.done && t.start !== null);
    ws.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
    const deadline = performance.now() + 15000;
    while (pending() && performance.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    ws.close(1000);
  }
  finish();
}

function finish() {
  if (mic) {
    mic.stop();
    mic = null;
  }
  ws = null;
  const button = $("cap-toggle");
  button.setAttribute("aria-pressed", "false");
  button.textContent = "Listen";
  const n = segments().length;
  $("cap-status").textContent = n ? `${n} turns captioned.` : "Stopped: no speech was heard.";
  $("cap-downloads").hidden = n === 0;
}

function segments() {
  return order
    .map((id) => turns.get(id))
    .filter((t) => t.done && t.text && t.start !== null && !t.text.startsWith("(not transcribed"))
    .map((t) => ({ start: t.start, end: t.end === null ? t.start : t.end, text: t.text }));
}

export function toggleCaptions() {
  if (ws) stop();
  else listen();
}

const WRITERS = {
  srt: toSrt,
  vtt: toVtt,
  txt: toTxt,
  json: (s) => JSON.stringify({ text: fullText(s), segments: s }, null, 2) + "\n",
};

export function setupCaptions() {
  $("cap-toggle").addEventListener("click", toggleCaptions);
  for (const b of document.querySelectorAll("#cap-downloads button")) {
    b.addEventListener("click", () => {
      const fmt = b.dataset.format;
      download(`captions.${fmt}`, WRITERS[fmt](segments()), fmt);
    });
  }
}
