// Transcribe a recording: POST /v1/audio/transcriptions (or /translations) with
// stream=true; segments as they finish, a progress bar, click a segment to play its span.
import { api, clearError, events, isAbort, server, showError } from "./api.js";
import { clock, download, toJson, toSrt, toTxt, toVerboseJson, toVtt } from "./formats.js";

const $ = (id) => document.getElementById(id);
let file = null;
let segments = [];
let running = null;
let stopAt = null; // the end of the segment being played
let info = {};

function choose(f) {
  if (!f) return;
  file = f;
  const audio = $("tr-audio");
  if (audio.src) URL.revokeObjectURL(audio.src);
  audio.src = URL.createObjectURL(f);
  audio.hidden = false;
  $("tr-file-name").textContent = `${f.name} (${(f.size / 1048576).toFixed(1)} MiB)`;
}

function figures(done, total, t0) {
  const elapsed = (performance.now() - t0) / 1000;
  const parts = [`elapsed ${elapsed.toFixed(1)} s`];
  if (total > 0 && done > 0) {
    const remaining = Math.max(0, (elapsed * (total - done)) / done);
    parts.push(`remaining ~${remaining.toFixed(0)} s`);
    parts.push(`${(done / elapsed).toFixed(1)}× real time`);
    parts.push(`${clock(done)} of ${clock(total)}`);
  }
  return parts.join(" · ");
}

function addSegment(seg) {
  segments.push(seg);
  const li = document.createElement("li");
  const b = document.createElement("button");
  b.type = "button";
  b.className = "segment";
  b.dataset.start = String(seg.start);
  b.dataset.end = String(seg.end);
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `${clock(seg.start)}–${clock(seg.end)}`;
  b.append(time, document.createTextNode(" " + seg.text));
  b.setAttribute("aria-label", `Play ${clock(seg.start)} to ${clock(seg.end)}: ${seg.text}`);
  b.addEventListener("click", () => play(seg));
  li.append(b);
  $("tr-segments").append(li);
}

function play(seg) {
  const audio = $("tr-audio");
  stopAt = seg.end;
  audio.currentTime = seg.start;
  highlight(seg.start);
  audio.play().catch((err) => showError(`the recording cannot be played here: ${err.message}`));
}

function highlight(t) {
  for (const b of document.querySelectorAll("#tr-segments .segment")) {
    const on = t >= Number(b.dataset.start) && t < Number(b.dataset.end);
    b.classList.toggle("playing", on);
    if (on) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
}

async function start(event) {
  event.preventDefault();
  if (running) return;
  if (!file) {
    showError("Choose or drop a recording first.");
    return;
  }
  clearError();
  segments = [];
  $("tr-segments").replaceChildren();
  $("tr-downloads").hidden = true;
  const task = $("tr-task").value;
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", server.model || "default");
  form.append("stream", "true");
  const language = $("tr-language").value.trim();
  const prompt = $("tr-prompt").value.trim();
  if (language && task === "transcribe") form.append("language", language);
  if (prompt) form.append("prompt", prompt);
  const path = task === "translate" ? "/v1/audio/translations" : "/v1/audio/transcriptions";
  running = new AbortController();
  $("tr-start").disabled = true;
  $("tr-stop").disabled = false;
  const bar = $("tr-progress");
  bar.removeAttribute("value"); // indeterminate until the first segment
  const t0 = performance.now();
  let total = $("tr-audio").duration || 0;
  let done = 0;
  const tick = setInterval(() => ($("tr-figures").textContent = figures(done, total, t0)), 250);
  try {
    const resp = await api(path, { method: "POST", body: form, signal: running.signal });
    for await (const ev of events(resp, running.signal)) {
      if (ev.type === "transcript.text.delta" && ev.segment) {
        if (ev.duration) total = ev.duration;
        done = Math.max(done, ev.segment.end);
        addSegment(ev.segment);
        if (total) bar.value = Math.min(1, done / total);
      } else if (ev.type === "transcript.text.done") {
        done = total = total || done;
        bar.value = 1;
        info = { task, duration: total, usage: ev.usage };
      }
    }
    $("tr-figures").textContent = figures(done, total, t0) + ` · ${segments.length} segments`;
  } catch (err) {
    if (!isAbort(err)) showError(err);
    else $("tr-figures").textContent = "stopped";
    bar.value = bar.value || 0;
  } finally {
    clearInterval(tick);
    running = null;
    $("tr-start").disabled = false;
    $("tr-stop").disabled = true;
    $("tr-downloads").hidden = segments.length === 0;
  }
}

const WRITERS = {
  text: ["txt", "txt", toTxt],
  srt: ["srt", "srt", toSrt],
  vtt: ["vtt", "vtt", toVtt],
  json: ["json", "json", toJson],
  verbose_json: ["verbose.json", "json", (s) => toVerboseJson(s, info)],
};

export function setupTranscribe() {
  $("tr-form").addEventListener("submit", start);
  $("tr-stop").addEventListener("click", () => running && running.abort());
  $("tr-file").addEventListener("change", (e) => choose(e.target.files[0]));
  const drop = $("tr-drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("dragging");
    choose(e.dataTransfer.files[0]);
  });
  const audio = $("tr-audio");
  audio.addEventListener("timeupdate", () => {
    if (stopAt !== null && audio.currentTime >= stopAt) {
      audio.pause();
      stopAt = null;
    }
    highlight(audio.currentTime);
  });
  audio.addEventListener("seeking", () => highlight(audio.currentTime));
  for (const b of document.querySelectorAll("#tr-downloads button")) {
    b.addEventListener("click", () => {
      const [ext, kind, write] = WRITERS[b.dataset.format];
      const stem = file ? file.name.replace(/\.[^.]+$/, "") : "transcript";
      download(`${stem}.${ext}`, write(segments), kind);
    });
  }
}
