// Compare: one prompt on 2 to 6 models (local and remote), each panel streaming its answer, then its
// figures from the same runtime call as `corral compare` (POST /api/compare). Local models run one
// after another unless "Run local models together"; blind mode hides names until a vote, votes go
// to the server and add up to a win table; "View code" shows the same call as curl and Python.
import { bytes, el, json, ndjson } from "../api.js";
import { chatModels } from "./chat.js";

const FIGURES = [["Time to first token", (r) => seconds(r.ttft_s)], ["Tokens/s", (r) => r.tokens_per_s ?? "-"],
  ["Total time", (r) => seconds(r.total_s)], ["Tokens in / out", (r) => r.tokens_in === null ? "-" : `${r.tokens_in} / ${r.tokens_out}`],
  ["Cost", (r) => r.cost_usd === null ? "-" : `$${r.cost_usd.toFixed(6)}`],
  ["Load time", (r) => !r.local ? "-" : r.load_s === null ? "already loaded" : seconds(r.load_s)],
  ["Memory", (r) => (r.local ? bytes(r.memory_bytes) : "-")]];

function seconds(s) { return s === null || s === undefined ? "-" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`; }

function code(model, prompt, settings) {
  const body = { model, messages: [{ role: "user", content: prompt }], ...settings };
  const curl = `curl ${location.origin}/v1/chat/completions \\\n  -H 'Content-Type: application/json' \\\n  -d '${JSON.stringify(body).replaceAll("'", "'\\''")}'`;
  const python = `from openai import OpenAI\n\nclient = OpenAI(base_url="${location.origin}/v1", api_key="none")\n` +
    `answer = client.chat.completions.create(model=${JSON.stringify(model)}, messages=${JSON.stringify(body.messages)},\n` +
    `    temperature=${settings.temperature}, max_tokens=${settings.max_tokens})\nprint(answer.choices[0].message.content)`;
  return el("details", {}, el("summary", { text: "View code" }), el("pre", { class: "report", text: curl }), el("pre", { class: "report", text: python }));
}

export async function render(view, params) {
  const names = await chatModels();
  const wanted = (params.get("models") || "").split(",").filter((n) => names.includes(n));
  let chosen = wanted.length >= 2 ? wanted.slice(0, 6) : names.slice(0, 2);
  if (chosen.length < 2) chosen = [...chosen, ...names].slice(0, 2);
  const prompt = el("textarea", { id: "compare-prompt", rows: 3 });
  const temperature = el("input", { id: "compare-temperature", type: "number", step: "0.1", min: "0", max: "2", value: "0" });
  const maxTokens = el("input", { id: "compare-max-tokens", type: "number", min: "1", value: "128" });
  const together = el("input", { id: "compare-together", type: "checkbox" });
  const blind = el("input", { id: "compare-blind", type: "checkbox" });
  const own = el("input", { id: "compare-own", type: "checkbox" });
  const panels = el("div", { class: "panels" });
  const status = el("p", { role: "status", class: "muted" });
  const wins = el("div");
  const run = el("button", { type: "submit", class: "primary", text: "Run" });
  const add = el("button", { type: "button", text: "Add model" });
  let slots = [];

  function slot(name, index) {
    const id = `compare-model-${index}`;
    const select = el("select", { id }, names.map((n) => el("option", { value: n, text: n })));
    select.value = name;
    const t = el("input", { id: `${id}-temperature`, type: "number", step: "0.1", min: "0", max: "2", value: temperature.value });
    const m = el("input", { id: `${id}-max-tokens`, type: "number", min: "1", value: maxTokens.value });
    const ownSettings = el("div", { class: "row", hidden: !own.checked },
      el("div", {}, el("label", { for: t.id, text: `Temperature for model ${index + 1}` }), t),
      el("div", {}, el("label", { for: m.id, text: `Max tokens for model ${index + 1}` }), m));
    const title = el("h2", { text: `Model ${String.fromCharCode(65 + index)}` });
    const answer = el("div", { class: "message content" });
    const figures = el("dl");
    const extra = el("div");
    const remove = el("button", { type: "button", text: "Remove", "aria-label": `Remove model ${index + 1}`,
      onclick: () => { if (slots.length > 2) { slots.splice(slots.indexOf(s), 1); draw(); } } });
    const node = el("section", { class: "panel", "aria-label": `Panel ${index + 1}` },
      title, el("label", { for: id, text: `Model ${index + 1}` }), select, ownSettings, answer, figures, extra, remove);
    const s = { node, select, t, m, ownSettings, title, answer, figures, extra, text: "" };
    return s;
  }

  function draw() {
    slots = slots.map((s, i) => { const fresh = slot(s.select.value, i); return fresh; });
    panels.replaceChildren(...slots.map((s) => s.node));
    add.disabled = slots.length >= 6;
  }

  function settingsOf(s) {
    return own.checked ? { temperature: Number(s.t.value), max_tokens: Number(s.m.value) }
                       : { temperature: Number(temperature.value), max_tokens: Number(maxTokens.value) };
  }

  async function refreshWins() {
    const table = (await json("GET", "/api/votes")).table;
    wins.replaceChildren(el("h2", { text: "Win table" }), table.length === 0 ? el("p", { class: "muted", text: "No votes yet." }) :
      el("table", {}, el("thead", {}, el("tr", {}, ...["Model", "Votes", "Wins", "Losses", "Ties", "Win rate"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, table.map((r) => el("tr", {}, el("td", { text: r.model }), el("td", { text: r.votes }), el("td", { text: r.wins }),
          el("td", { text: r.losses }), el("td", { text: r.ties }), el("td", { text: `${Math.round(r.win_rate * 100)}%` }))))));
  }

  function reveal() {  // after a vote: names, and the code that names them
    slots.forEach((s) => { s.title.textContent = s.select.value; s.select.hidden = false; s.extra.append(code(s.select.value, prompt.value, settingsOf(s))); });
  }

  async function vote(winner) {
    const models = slots.map((s) => s.select.value);
    await json("POST", "/api/votes", { models, winner });
    slots.forEach((s) => s.extra.querySelectorAll("button.vote").forEach((b) => { b.disabled = true; }));
    reveal();
    status.textContent = winner === "tie" ? "voted: a tie" : `voted for ${winner}`;
    await refreshWins();
  }

  async function start(event) {
    event.preventDefault();
    const models = slots.map((s) => s.select.value);
    if (blind.checked && new Set(models).size !== models.length) { status.textContent = "blind mode needs different models"; return; }
    const shared = { temperature: Number(temperature.value), max_tokens: Number(maxTokens.value) };
    const body = { models, messages: [{ role: "user", content: prompt.value }], ...shared, concurrent: together.checked,
                   panels: own.checked ? slots.map(settingsOf) : null };
    run.disabled = true;
    status.textContent = "running…";
    slots.forEach((s, i) => {
      s.text = ""; s.answer.replaceChildren(); s.figures.replaceChildren(); s.extra.replaceChildren();
      s.title.textContent = blind.checked ? `Model ${String.fromCharCode(65 + i)}` : s.select.value;
      s.select.hidden = blind.checked;
    });
    let frame = 0;
    const paint = () => { frame = 0; slots.forEach((s) => { s.answer.textContent = s.text; }); };
    try {
      for await (const line of ndjson("POST", "/api/compare", body)) {
        const s = slots[line.panel];
        if (line.text !== undefined) { s.text += line.text; if (!frame) frame = requestAnimationFrame(paint); }
        else if (line.result) {
          const r = line.result;
          if (r.error) s.text = `error: ${r.error.message}`;
          s.figures.replaceChildren(...FIGURES.flatMap(([label, value]) => [el("dt", { text: label }), el("dd", { text: String(value(r)) })]));
          if (!blind.checked) s.extra.append(code(s.select.value, prompt.value, settingsOf(s)));
          if (blind.checked) s.extra.append(el("button", { type: "button", class: "vote", text: "Vote for this answer", onclick: () => vote(s.select.value) }));
        }
      }
      if (blind.checked) slots[0].extra.append(el("button", { type: "button", class: "vote", text: "Tie", onclick: () => vote("tie") }));
      status.textContent = blind.checked ? "vote for the best answer" : "done";
    } catch (error) { status.textContent = `failed: ${error.message}`; }
    if (frame) cancelAnimationFrame(frame);
    paint();
    run.disabled = false;
  }

  own.addEventListener("change", () => slots.forEach((s) => { s.ownSettings.hidden = !own.checked; }));
  add.addEventListener("click", () => { if (slots.length < 6) { slots.push(slot(names[0], slots.length)); draw(); } });
  slots = chosen.map((n, i) => slot(n, i));
  view.append(el("h1", { text: "Compare" }),
    el("form", { onsubmit: start },
      el("label", { for: "compare-prompt", text: "Prompt" }), prompt,
      el("div", { class: "row" },
        el("div", {}, el("label", { for: "compare-temperature", text: "Temperature" }), temperature),
        el("div", {}, el("label", { for: "compare-max-tokens", text: "Max tokens" }), maxTokens),
        el("div", {}, el("label", { for: "compare-own", text: "Own settings per panel" }), own),
        el("div", {}, el("label", { for: "compare-together", text: "Run local models together" }), together),
        el("div", {}, el("label", { for: "compare-blind", text: "Blind (hide names until a vote)" }), blind),
        add, run)),
    status, panels, wins);
  draw();
  await refreshWins();
}
