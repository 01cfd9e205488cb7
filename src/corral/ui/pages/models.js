// Models: every local and remote model with its facts and state, load / unload / delete, pull by
// reference with a live progress bar, the inspect report, and the memory budget as a bar.
import { bytes, count, el, json, ndjson } from "../api.js";

function state(row) {
  if (row.kind !== "model") return row.kind === "remote" ? "remote" : "alias";
  if (!row.loaded) return "not loaded";
  const left = row.loaded.expires_in_seconds;
  return row.loaded.in_flight > 0 ? "loaded, busy" : left === null ? "loaded" : `loaded, idle (unloads in ${Math.round(left)} s)`;
}

function memory(row) {
  if (row.kind !== "model") return "-";
  const measured = row.loaded?.memory.measured_bytes || row.measured_memory_bytes;
  const estimate = row.memory?.cpu_bytes;
  return `${measured ? bytes(measured) + " measured" : "not measured"}${estimate ? `, ~${bytes(estimate)} estimated` : ""}`;
}

export async function render(view) {
  const status = el("p", { role: "status", class: "muted" });
  const budget = el("div");
  const body = el("tbody");
  const report = el("div");
  const progress = el("progress", { max: 1, value: 0, hidden: true, "aria-label": "Pull progress" });
  const reference = el("input", { id: "pull-ref", placeholder: "hf:org/name or pkg:module", size: 34 });
  const pullButton = el("button", { type: "submit", class: "primary", text: "Pull" });

  async function act(label, work) {
    status.textContent = `${label}…`;
    try { await work(); status.textContent = `${label}: done`; } catch (error) { status.textContent = `${label}: ${error.message}`; }
    await refresh();
  }

  function actions(row) {
    if (row.kind !== "model") return el("td", {}, row.kind === "alias" ? `→ ${row.targets.join(" → ")}` : row.provider);
    const name = row.name;
    const path = `/api/models/${encodeURI(name)}`;
    return el("td", { class: "row" },
      row.loaded ? el("button", { text: "Unload", "aria-label": `Unload ${name}`, onclick: () => act(`unload ${name}`, () => json("POST", `${path}/unload`)) })
                 : el("button", { text: "Load", "aria-label": `Load ${name}`, onclick: () => act(`load ${name}`, () => json("POST", `${path}/load`)) }),
      el("button", { text: "Inspect", "aria-label": `Inspect ${name}`, onclick: () => inspect(name) }),
      row.source_kind === "system" ? null :
        el("button", { text: "Delete", "aria-label": `Delete ${name}`, onclick: () => {
          if (confirm(`Remove ${name} from corral?`)) act(`delete ${name}`, () => json("DELETE", path));
        } }));
  }

  async function inspect(name) {
    const data = await json("GET", `/api/models/${encodeURI(name)}/inspect`);
    report.replaceChildren(el("h2", { text: `inspect ${name}` }), el("pre", { class: "report", text: JSON.stringify(data, null, 2) }));
  }

  async function refresh() {
    const data = await json("GET", "/api/models");
    const share = data.budget_bytes ? Math.min(1, data.resident_bytes / data.budget_bytes) : 0;
    budget.replaceChildren(el("label", { text: `Memory: ${bytes(data.resident_bytes)} loaded of a ${bytes(data.budget_bytes)} budget` }),
      el("div", { class: "bar", role: "img", "aria-label": `${Math.round(share * 100)}% of the memory budget in use` },
        el("span", { style: { width: `${(share * 100).toFixed(1)}%` } })));
    body.replaceChildren(...data.models.map((row) => el("tr", { "data-model": row.name },
      el("td", {}, row.tasks?.includes("chat") ? el("a", { href: `#/chat?model=${encodeURIComponent(row.name)}`, text: row.name }) : row.name),
      el("td", { text: (row.tasks || []).join(", ") || (row.kind === "remote" ? "chat, complete, embed" : "-") }),
      el("td", { text: row.engine || row.type || "-" }), el("td", { text: row.format || "-" }),
      el("td", { text: bytes(row.size_bytes) }), el("td", { text: count(row.parameters) }),
      el("td", { class: "state", text: state(row) }), el("td", { text: memory(row) }), actions(row))));
  }

  async function pull(event) {
    event.preventDefault();
    pullButton.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    try {
      for await (const line of ndjson("POST", "/api/models/pull", { model: reference.value.trim() })) {
        if (line.status === "downloading") { progress.max = line.total || 1; progress.value = line.completed; status.textContent = `downloading ${line.repo}: ${bytes(line.completed)} of ${bytes(line.total)}`; }
        else if (line.status === "success") { progress.value = progress.max; status.textContent = `pulled ${line.model}`; }
        else if (line.status === "error") status.textContent = `pull failed: ${line.error.message}`;
      }
    } catch (error) { status.textContent = `pull failed: ${error.message}`; }
    pullButton.disabled = false;
    await refresh();
  }

  view.append(el("h1", { text: "Models" }), budget,
    el("form", { class: "row", onsubmit: pull }, el("div", {}, el("label", { for: "pull-ref", text: "Pull a model" }), reference), pullButton),
    progress, status,
    el("div", { class: "scroll" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["Name", "Tasks", "Engine", "Format", "Size", "Parameters", "State", "Memory", "Actions"].map((h) => el("th", { scope: "col", text: h })))),
      body)),
    report);
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 5000);
  return () => clearInterval(timer);
}
