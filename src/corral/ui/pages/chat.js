// Chat: streaming answers from any chat model (local, remote, alias), a system prompt and sampling
// settings, Stop (aborts the request: the server stops generating), markdown shown safely, per
// answer time to first token, tokens/s and tokens. The conversation is kept in this browser.
import { el, json, sse } from "../api.js";
import { renderMarkdown } from "../markdown.js";

const STORE = "corral-chat";

export async function chatModels() {
  const data = await json("GET", "/api/models");
  return data.models.filter((m) => m.kind !== "model" || (m.tasks || []).includes("chat")).map((m) => m.name);
}

function dataUrl(file) {  // an attached image as a data: URL (what image_url content parts carry)
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function wireMessage({ role, content, images }) {  // OpenAI's shape: text, or image parts then the text
  if (!images || images.length === 0) return { role, content };
  return { role, content: [...images.map((url) => ({ type: "image_url", image_url: { url } })), { type: "text", text: content }] };
}

function saved() {
  try { return JSON.parse(localStorage.getItem(STORE)) || {}; } catch { return {}; }
}

export async function render(view, params) {
  const names = await chatModels();
  const kept = saved();
  const model = el("select", { id: "chat-model" }, names.map((n) => el("option", { value: n, text: n })));
  model.value = params.get("model") && names.includes(params.get("model")) ? params.get("model") : (kept.model && names.includes(kept.model) ? kept.model : names[0] || "");
  const system = el("textarea", { id: "chat-system", rows: 2 });
  const requireTool = el("input", { id: "chat-tool-required", type: "checkbox" });
  const tools = el("textarea", { id: "chat-tools", rows: 4, placeholder: '[{"type": "function", "function": {"name": "get_weather", "parameters": {...}}}]' });
  system.value = kept.system || "";
  const temperature = el("input", { id: "chat-temperature", type: "number", step: "0.1", min: "0", max: "2", value: "0.8" });
  const maxTokens = el("input", { id: "chat-max-tokens", type: "number", min: "1", value: "512" });
  const topP = el("input", { id: "chat-top-p", type: "number", step: "0.05", min: "0", max: "1", value: "0.95" });
  const messages = el("div", { class: "messages", "aria-live": "polite" });
  const input = el("textarea", { id: "chat-input", rows: 3 });
  const attach = el("input", { id: "chat-image", type: "file", accept: "image/*", multiple: true });
  const send = el("button", { type: "submit", class: "primary", text: "Send" });
  const stop = el("button", { type: "button", text: "Stop", disabled: true });
  const status = el("p", { role: "status", class: "muted" });
  let history = Array.isArray(kept.messages) ? kept.messages : [];
  let controller = null;

  const keep = () => {
    try { localStorage.setItem(STORE, JSON.stringify({ model: model.value, system: system.value, messages: history })); }
    catch { localStorage.removeItem(STORE); }  // images can pass the browser's storage quota: keep nothing rather than fail
  };

  function bubble(role, text, metrics, images = []) {
    const node = el("div", { class: `message ${role}`, "data-role": role });
    for (const url of images) node.append(el("img", { src: url, alt: "attached image", class: "attached" }));
    if (role === "user") node.append(el("div", { text }));
    else node.append(el("div", { class: "content" }, renderMarkdown(text)));
    if (metrics) node.append(el("div", { class: "metrics", text: metrics }));
    messages.append(node);
    return node;
  }

  function redraw() {
    messages.replaceChildren();
    for (const m of history) bubble(m.role, m.content, m.metrics, m.images || []);
  }

  async function ask(event) {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || controller) return;
    let offered = null;
    try { offered = tools.value.trim() ? JSON.parse(tools.value) : null; } catch { status.textContent = "the tools are not valid JSON"; return; }
    input.value = "";
    const images = await Promise.all([...attach.files].map(dataUrl));
    attach.value = "";
    history.push({ role: "user", content: text, images });
    bubble("user", text, null, images);
    const node = bubble("assistant", "");
    const content = node.querySelector(".content");
    const wire = [...(system.value.trim() ? [{ role: "system", content: system.value.trim() }] : []),
                  ...history.map(wireMessage)];
    const body = { model: model.value, messages: wire, stream: true, stream_options: { include_usage: true },
                   temperature: Number(temperature.value), top_p: Number(topP.value), max_tokens: Number(maxTokens.value) };
    if (offered) body.tools = offered;
    if (offered && requireTool.checked) body.tool_choice = "required";
    controller = new AbortController();
    send.disabled = true; stop.disabled = false;
    status.textContent = "answering…";
    let answer = "", usage = null, first = null, frame = 0, served = null;
    const calls = [];
    const started = performance.now();
    const paint = () => { frame = 0; content.replaceChildren(...renderMarkdown(answer)); };
    try {
      for await (const chunk of sse("/v1/chat/completions", body, { signal: controller.signal })) {
        const piece = chunk.choices?.[0]?.delta?.content || "";
        if (piece) {
          if (first === null) first = performance.now();
          answer += piece;
          if (!frame) frame = requestAnimationFrame(paint);  // one DOM update per frame, not per token
        }
        for (const call of chunk.choices?.[0]?.delta?.tool_calls || []) {  // shown as they are called
          const slot = calls[call.index ?? calls.length] ||= { name: "", arguments: "" };
          slot.name += call.function?.name || "";
          slot.arguments += call.function?.arguments || "";
        }
        if (chunk.usage) usage = chunk.usage;
        if (chunk.x_corral) served = chunk.x_corral;
      }
      status.textContent = "";
    } catch (error) {
      status.textContent = error.name === "AbortError" ? "stopped" : `failed: ${error.message}`;
    }
    if (frame) cancelAnimationFrame(frame);
    paint();
    for (const call of calls) content.append(el("pre", { class: "tool-call" }, el("code", { text: `tool call: ${call.name}(${call.arguments})` })));
    if (calls.length) answer += calls.map((c) => `\n[tool call: ${c.name}(${c.arguments})]`).join("");
    const ended = performance.now();
    const out = usage?.completion_tokens ?? 0;
    const rate = first !== null && out > 1 && ended > first ? ((out - 1) / ((ended - first) / 1000)).toFixed(1) : "-";
    const metrics = `time to first token ${first === null ? "-" : Math.round(first - started) + " ms"} · ${rate} tokens/s · ` +
      `${usage ? `${usage.prompt_tokens} in / ${out} out` : "tokens unknown"}` +
      (served?.cost_usd != null ? ` · $${served.cost_usd.toFixed(6)}` : "") +
      (served?.target && served.target !== model.value ? ` · served by ${served.target}` : "");
    node.append(el("div", { class: "metrics", text: metrics }));
    history.push({ role: "assistant", content: answer, metrics });
    keep();
    controller = null;
    send.disabled = false; stop.disabled = true;
  }

  stop.addEventListener("click", () => controller?.abort());
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  const form = el("form", { onsubmit: ask },
    el("label", { for: "chat-input", text: "Message" }), input,
    el("div", { class: "row" }, send, stop, el("div", {}, el("label", { for: "chat-image", text: "Attach images (image-text models)" }), attach)));
  const clear = el("button", { type: "button", text: "New chat", onclick: () => { history = []; keep(); redraw(); } });
  model.addEventListener("change", keep);
  system.addEventListener("change", keep);
  view.append(el("h1", { text: "Chat" }),
    el("div", { class: "row" },
      el("div", {}, el("label", { for: "chat-model", text: "Model" }), model),
      el("div", {}, el("label", { for: "chat-temperature", text: "Temperature" }), temperature),
      el("div", {}, el("label", { for: "chat-top-p", text: "Top p" }), topP),
      el("div", {}, el("label", { for: "chat-max-tokens", text: "Max tokens" }), maxTokens), clear),
    el("label", { for: "chat-system", text: "System prompt" }), system,
    el("details", {}, el("summary", { text: "Tools" }), el("label", { for: "chat-tools", text: "Tools (JSON, OpenAI's shape)" }), tools,
      el("label", { for: "chat-tool-required", text: "Require a tool call" }), requireTool),
    messages, form, status);
  redraw();
  return () => controller?.abort();
}
