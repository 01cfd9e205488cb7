// Usage: the request log (latest calls, filtered by model and status, paged), usage and cost by
// model and day (bars), and the gateway targets' health from their zero-token probes.
import { el, json, request } from "../api.js";

function day(ts) { return new Date(ts * 1000).toISOString().slice(0, 19).replace("T", " "); }

export async function render(view) {
  const model = el("input", { id: "usage-model", placeholder: "any" });
  const status = el("select", { id: "usage-status" }, [["", "any"], ["ok", "ok"], ["error", "error"]].map(([v, t]) => el("option", { value: v, text: t })));
  const logBody = el("tbody");
  const more = el("button", { type: "button", text: "Older calls", hidden: true });
  const chart = el("div");
  const health = el("div");
  let before = null;

  async function logs(append) {
    const query = new URLSearchParams({ limit: "50" });
    if (model.value.trim()) query.set("model", model.value.trim());
    if (status.value) query.set("status", status.value);
    if (append && before !== null) query.set("before", String(before));
    const page = await json("GET", `/api/logs?${query}`);
    const rows = page.rows.map((r) => el("tr", { "data-status": r.status },
      el("td", { text: day(r.ts) }), el("td", { text: r.model || "-" }), el("td", { text: r.target || "-" }),
      el("td", { text: r.door || "-" }), el("td", { text: r.task || "-" }), el("td", { text: r.status }),
      el("td", { text: `${r.prompt_tokens ?? 0} / ${r.completion_tokens ?? 0}` }),
      el("td", { text: r.ttft_ms === null ? "-" : `${Math.round(r.ttft_ms)} ms` }), el("td", { text: `${Math.round(r.total_ms || 0)} ms` }),
      el("td", { text: `$${(r.cost_usd || 0).toFixed(6)}` })));
    if (append) logBody.append(...rows); else logBody.replaceChildren(...rows);
    before = page.next_before;
    more.hidden = before === null;
  }

  async function usage() {
    const data = await json("GET", "/api/usage");
    const top = Math.max(1e-12, ...data.rows.map((r) => r.requests));
    chart.replaceChildren(el("h2", { text: `Usage by model and day (total $${data.total_cost_usd.toFixed(6)})` }),
      el("table", { class: "usage" }, el("thead", {}, el("tr", {}, ...["Day", "Model", "Target", "Calls", "Tokens in / out", "Cost", ""].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, data.rows.map((r) => el("tr", {}, el("td", { text: r.day }), el("td", { text: r.name || "-" }), el("td", { text: r.target || "-" }),
          el("td", { text: r.requests }), el("td", { text: `${r.prompt_tokens} / ${r.completion_tokens}` }), el("td", { text: `$${r.cost_usd.toFixed(6)}` }),
          el("td", {}, el("div", { class: "bar", role: "img", "aria-label": `${r.requests} calls` }, el("span", { style: { width: `${(100 * r.requests / top).toFixed(1)}%` } }))))))));
  }

  async function targets() {
    const report = await (await request("GET", "/api/health/targets", undefined, { accept: [503] })).json();
    const word = (up) => (up === true ? "up" : up === false ? "down" : "unknown");
    health.replaceChildren(el("h2", { text: `Targets${report.ok ? "" : " (a required alias is down)"}` }),
      report.targets.length === 0 ? el("p", { class: "muted", text: "No targets configured." }) :
        el("ul", { class: "targets" }, report.targets.map((t) => el("li", { text: `${t.target} (${t.kind}): ${word(t.up)}${t.error ? ` — ${t.error}` : ""}` }))));
  }

  const filter = el("form", { class: "row", onsubmit: (e) => { e.preventDefault(); logs(false); } },
    el("div", {}, el("label", { for: "usage-model", text: "Model" }), model),
    el("div", {}, el("label", { for: "usage-status", text: "Status" }), status),
    el("button", { type: "submit", text: "Filter" }));
  more.addEventListener("click", () => logs(true));
  view.append(el("h1", { text: "Usage" }), chart, health, el("h2", { text: "Latest calls" }), filter,
    el("div", { class: "scroll" }, el("table", { class: "log" },
      el("thead", {}, el("tr", {}, ...["Time", "Model", "Target", "Door", "Task", "Status", "Tokens in / out", "First token", "Total", "Cost"].map((h) => el("th", { scope: "col", text: h })))),
      logBody)), more);
  await Promise.all([logs(false), usage(), targets()]);
}
