// The server's API as the page uses it: the key (asked for on a 401, kept for this tab's
// session only, never put in a URL), errors as messages, server-sent events.

const KEY_NAME = "qaudio-api-key";

export class ApiError extends Error {
  constructor(message, status, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

let asking = null; // one prompt at a time, shared by the requests that need it

function askKey(why) {
  if (asking) return asking;
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-why").textContent = why;
  input.value = "";
  asking = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        asking = null;
        const key = dialog.returnValue === "ok" ? input.value.trim() : "";
        input.value = "";
        if (key) sessionStorage.setItem(KEY_NAME, key);
        resolve(key);
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
  return asking;
}

export function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorOf(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    // not JSON: the status line says it
  }
  const retry = resp.headers.get("Retry-After");
  if (resp.status === 429 && retry) message += ` (retry in ${retry} s)`;
  return new ApiError(message, resp.status, retry);
}

// fetch with the key; a 401 asks for the key once and tries again with it
export async function api(path, init = {}) {
  for (let attempt = 0; ; attempt++) {
    const resp = await fetch(path, { ...init, headers: headers(init.headers || {}) });
    if (resp.status !== 401 || attempt > 0) {
      if (!resp.ok) throw await errorOf(resp);
      return resp;
    }
    const err = await errorOf(resp);
    const why = apiKey()
      ? "The key given is not valid for this server; enter the right one."
      : "This server needs its API key (qaudio serve --api-key). It is kept for this tab only.";
    if (apiKey()) sessionStorage.removeItem(KEY_NAME);
    const key = await askKey(why);
    if (!key) throw err;
  }
}

// the JSON objects of a text/event-stream response, as they come
export async function* events(resp, signal) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        const obj = JSON.parse(data);
        if (obj.error) throw new ApiError(obj.error.message || "the server failed", 500);
        yield obj;
      }
    }
  } finally {
    if (signal && signal.aborted) reader.cancel().catch(() => {});
  }
}

export function showError(err) {
  const banner = document.getElementById("banner");
  const text = err instanceof Error ? err.message : String(err);
  document.getElementById("banner-text").textContent = text;
  banner.hidden = false;
  banner.dataset.status = err && err.status ? String(err.status) : "";
}

export function clearError() {
  document.getElementById("banner").hidden = true;
}

export function isAbort(err) {
  return err && err.name === "AbortError";
}

// what the page knows of the server (filled from GET /v1/status)
export const server = { model: "" };
