// Usage: not built yet (issue 14 continues); the page says so instead of failing.
import { el } from "../api.js";

export async function render(view) {
  view.append(el("h1", { text: "Usage" }), el("p", { class: "muted", text: "This page is not built yet." }));
}
