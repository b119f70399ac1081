// Transcript files from segments {start, end, text} (seconds), in the shapes the server's
// own writers use (`qaudio transcribe -o`, response_format).

function stamp(seconds, sep) {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3600000);
  const m = Math.floor((ms % 3600000) / 60000);
  const s = Math.floor((ms % 60000) / 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(h)}:${pad(m)}:${pad(s)}${sep}${pad(ms % 1000, 3)}`;
}

export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

const oneLine = (text) => text.replace(/\s*\n\s*/g, " ").trim();

export function toSrt(segs) {
  return segs
    .map((g, i) => `${i + 1}\n${stamp(g.start, ",")} --> ${stamp(g.end, ",")}\n${oneLine(g.text)}\n`)
    .join("\n");
}

export function toVtt(segs) {
  const cues = segs.map((g) => `${stamp(g.start, ".")} --> ${stamp(g.end, ".")}\n${oneLine(g.text)}\n`);
  return ["WEBVTT\n", ...cues].join("\n");
}

export function toTxt(segs) {
  return segs.map((g) => oneLine(g.text)).join("\n") + (segs.length ? "\n" : "");
}

export function fullText(segs) {
  return segs.map((g) => oneLine(g.text)).filter(Boolean).join(" ");
}

export function toJson(segs) {
  return JSON.stringify({ text: fullText(segs) }, null, 2) + "\n";
}

export function toVerboseJson(segs, extra) {
  const segments = segs.map((g, i) => ({ id: i, start: g.start, end: g.end, text: oneLine(g.text) }));
  return JSON.stringify({ ...extra, text: fullText(segs), segments }, null, 2) + "\n";
}

const TYPES = { srt: "application/x-subrip", vtt: "text/vtt", txt: "text/plain", json: "application/json" };

export function download(name, text, kind) {
  const blob = new Blob([text], { type: `${TYPES[kind] || "text/plain"};charset=utf-8` });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
