// corral's own HTTP API, as the page calls it: the key (when the server wants one) from session
// storage, errors as Error objects with the server's message, NDJSON and SSE streams as events.

const KEY = "corral-api-key";

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function askKey() {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  input.value = "";
  dialog.showModal();
  await new Promise((resolve) => dialog.addEventListener("close", resolve, { once: true }));
  if (input.value) sessionStorage.setItem(KEY, input.value);
}

export async function request(method, path, body, options = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const type = options.raw ? options.raw.type || "application/octet-stream" : body === undefined ? null : "application/json";
    const init = { method, headers: headers(type ? { "Content-Type": type } : {}), signal: options.signal };
    if (options.raw) init.body = options.raw;  // a file, sent as it is
    else if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    if (response.status === 401) { await askKey(); continue; }
    if (!response.ok && !(options.accept || []).includes(response.status)) {
      let message = `${response.status} ${response.statusText}`;
      try { const data = await response.json(); message = data.error?.message || message; } catch { /* not JSON */ }
      throw new ApiError(response.status, message);
    }
    return response;
  }
  throw new ApiError(401, "an API key is needed");
}

export async function json(method, path, body) {
  return (await request(method, path, body)).json();
}

async function* lines(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
      yield line;
    }
  }
  if (buffer) yield buffer;
}

export async function* ndjson(method, path, body, options = {}) {
  const response = await request(method, path, body, options);
  for await (const line of lines(response)) if (line.trim()) yield JSON.parse(line);
}

export async function* sse(path, body, options = {}) {
  const response = await request("POST", path, body, options);
  for await (const line of lines(response)) {
    if (!line.startsWith("data:")) continue;
    const data = line.slice(5).trim();
    if (data === "[DONE]") return;
    const event = JSON.parse(data);
    if (event.error) throw new ApiError(502, event.error.message || "the answer failed");
    yield event;
  }
}

export function bytes(n) {
  if (!n) return "-";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0, v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function count(n) {
  if (!n) return "-";
  for (const [d, s] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "K"]]) if (n >= d) return `${(n / d).toFixed(1)}${s}`;
  return String(n);
}

// Element builder: text always as text (textContent), never as HTML.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else if (k === "style") Object.assign(node.style, v);  // CSSOM: the CSP forbids style attributes
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
