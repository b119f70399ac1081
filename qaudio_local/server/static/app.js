// The page: views as tabs, the keyboard shortcut, the error banner, the first status read.
import { clearError, showError } from "./api.js";
import { setupCaptions, toggleCaptions } from "./captions.js";
import { loadStatus, statusShown } from "./status.js";
import { setupTalk, toggleMic } from "./talk.js";
import { setupTranscribe } from "./transcribe.js";

const VIEWS = ["talk", "transcribe", "captions", "status"];
let current = "talk";

function show(name, focus) {
  current = name;
  for (const v of VIEWS) {
    const tab = document.getElementById(`tab-${v}`);
    tab.setAttribute("aria-selected", String(v === name));
    tab.tabIndex = v === name ? 0 : -1;
    document.getElementById(`view-${v}`).hidden = v !== name;
  }
  if (focus) document.getElementById(`tab-${name}`).focus();
  statusShown(name === "status");
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}

function setupTabs() {
  for (const v of VIEWS) {
    const tab = document.getElementById(`tab-${v}`);
    tab.addEventListener("click", () => show(v));
    tab.addEventListener("keydown", (e) => {
      const i = VIEWS.indexOf(v);
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step) {
        e.preventDefault();
        show(VIEWS[(i + step + VIEWS.length) % VIEWS.length], true);
      }
    });
  }
  const start = location.hash.slice(1);
  show(VIEWS.includes(start) ? start : "talk");
}

function setupShortcuts() {
  document.addEventListener("keydown", (e) => {
    if (e.altKey && !e.ctrlKey && !e.metaKey && (e.key === "m" || e.key === "M" || e.code === "KeyM")) {
      e.preventDefault();
      if (current === "captions") toggleCaptions();
      else {
        if (current !== "talk") show("talk");
        toggleMic();
      }
    }
  });
}

async function main() {
  document.getElementById("banner-close").addEventListener("click", clearError);
  setupTabs();
  setupTalk();
  setupTranscribe();
  setupCaptions();
  setupShortcuts();
  document.body.dataset.ready = "true";
  for (;;) {
    try {
      await loadStatus();
      clearError();
      return;
    } catch (err) {
      showError(err);
      if (err.status !== 503) return; // the model is loading: ask again shortly
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

window.addEventListener("unhandledrejection", (e) => showError(e.reason));
window.addEventListener("error", (e) => showError(e.message));
main();
