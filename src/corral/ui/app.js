// The shell: hash routes (#/models, #/chat?model=NAME, ...), each page a module with
// render(view, params) that builds its DOM and may return a cleanup function.
import { el } from "./api.js";

const PAGES = {
  models: () => import("./pages/models.js"),
  chat: () => import("./pages/chat.js"),
  compare: () => import("./pages/compare.js"),
  playground: () => import("./pages/playground.js"),
  usage: () => import("./pages/usage.js"),
};
let cleanup = null;

function parse() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [name, query] = hash.split("?");
  return { page: PAGES[name] ? name : "models", params: new URLSearchParams(query || "") };
}

async function show() {
  const { page, params } = parse();
  if (cleanup) { try { cleanup(); } catch { /* the old page is gone anyway */ } cleanup = null; }
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === `#/${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const view = document.getElementById("view");
  view.replaceChildren();
  try {
    const module = await PAGES[page]();
    cleanup = (await module.render(view, params)) || null;
  } catch (error) {
    view.replaceChildren(el("p", { class: "error", role: "alert", text: `This page failed: ${error.message}` }));
  }
}

window.addEventListener("hashchange", show);
show();
