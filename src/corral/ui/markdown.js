// Markdown for model output, built as DOM nodes from text: nothing the model writes is ever parsed
// as HTML, so `<script>` or `<img onerror=...>` in an answer shows as those characters. Handles
// fenced code blocks (with a Copy button), headings, lists, paragraphs, **bold**, *italic*, `code`.
import { el } from "./api.js";

function inline(text) {
  const out = [];
  const pattern = /(`[^`]+`|\*\*[^*]+\*\*|\*[^*\s][^*]*\*)/g;
  let last = 0, match;
  while ((match = pattern.exec(text)) !== null) {
    if (match.index > last) out.push(text.slice(last, match.index));
    const token = match[0];
    if (token.startsWith("`")) out.push(el("code", { text: token.slice(1, -1) }));
    else if (token.startsWith("**")) out.push(el("strong", { text: token.slice(2, -2) }));
    else out.push(el("em", { text: token.slice(1, -1) }));
    last = match.index + token.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

function codeBlock(code, language) {
  const copy = el("button", { type: "button", text: "Copy", "aria-label": "Copy code" });
  copy.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(code); copy.textContent = "Copied"; } catch { copy.textContent = "Copy failed"; }
  });
  return el("pre", { "data-language": language || null }, copy, el("code", { text: code }));
}

function blocks(text) {
  const nodes = [];
  const lines = text.split("\n");
  let paragraph = [], list = null;
  const flush = () => {
    if (paragraph.length) nodes.push(el("p", {}, inline(paragraph.join(" "))));
    paragraph = [];
    if (list) nodes.push(list);
    list = null;
  };
  for (const line of lines) {
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const item = /^\s*(?:[-*]|\d+\.)\s+(.*)$/.exec(line);
    if (!line.trim()) flush();
    else if (heading) { flush(); nodes.push(el(`h${Math.min(6, heading[1].length + 2)}`, {}, inline(heading[2]))); }
    else if (item) {
      if (paragraph.length) { nodes.push(el("p", {}, inline(paragraph.join(" ")))); paragraph = []; }
      list = list || el(/^\s*\d/.test(line) ? "ol" : "ul");
      list.append(el("li", {}, inline(item[1])));
    } else { if (list) { nodes.push(list); list = null; } paragraph.push(line); }
  }
  flush();
  return nodes;
}

export function renderMarkdown(text) {
  const out = [];
  const fence = /```([\w+-]*)\n?([\s\S]*?)(```|$)/g;
  let last = 0, match;
  while ((match = fence.exec(text)) !== null) {
    if (match.index > last) out.push(...blocks(text.slice(last, match.index)));
    out.push(codeBlock(match[2].replace(/\n$/, ""), match[1]));
    last = match.index + match[0].length;
    if (match[0].length === 0) break;
  }
  if (last < text.length) out.push(...blocks(text.slice(last)));
  return out;
}
