// Playground: a form for each task the chosen model serves, and its result drawn as that task's
// kind: a similarity matrix, a ranked list, labels as bars, entities highlighted, boxes on the image,
// masks over it, an audio player, text. Calls the same routes a script would: /v1/embeddings,
// /v1/rerank, and the Hugging Face task API (POST /models/NAME/pipeline/TASK: JSON, or the file).
import { el, json, ndjson, request } from "../api.js";

const HF = { classify_text: "text-classification", classify_tokens: "token-classification", answer_question: "question-answering",
  translate: "translation", summarize: "summarization", classify_image: "image-classification", detect_objects: "object-detection",
  segment_image: "image-segmentation", describe_image: "image-to-text", classify_audio: "audio-classification",
  classify_video: "video-classification", transcribe: "automatic-speech-recognition", speak: "text-to-speech", generate_image: "text-to-image" };
const FILES = { classify_image: "image/*", detect_objects: "image/*", segment_image: "image/*", describe_image: "image/*",
  classify_audio: "audio/*", transcribe: "audio/*", classify_video: "video/*" };
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];

function field(id, label, node) { node.id = id; return el("div", {}, el("label", { for: id, text: label }), node); }
function labelsOf(data) {  // [{label, score}] however deep the list, or zero-shot's {labels, scores}
  if (data && Array.isArray(data.labels)) return data.labels.map((label, i) => ({ label, score: data.scores[i] }));
  let items = data;
  while (Array.isArray(items) && Array.isArray(items[0])) items = items[0];
  return Array.isArray(items) ? items : [];
}
function bars(items) {
  return el("ul", { class: "labels" }, items.map((x) => el("li", {}, el("span", { text: `${x.label} ${(x.score * 100).toFixed(1)}%` }),
    el("div", { class: "bar", role: "img", "aria-label": `${x.label}: ${(x.score * 100).toFixed(1)}%` }, el("span", { style: { width: `${(x.score * 100).toFixed(1)}%` } })))));
}
function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / (Math.sqrt(na * nb) || 1);
}
function lines(text) { return text.split("\n").map((s) => s.trim()).filter(Boolean); }

async function base64(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function hf(model, task, body) {
  return request("POST", `/models/${encodeURI(model)}/pipeline/${HF[task]}`, body);
}

async function picture(file, draw) {  // the image on a canvas, then draw(ctx, scale) over it
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.src = url;
  await img.decode();
  const canvas = el("canvas", { width: img.naturalWidth, height: img.naturalHeight, class: "result-image", role: "img", "aria-label": "result" });
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  await draw(ctx, canvas);
  URL.revokeObjectURL(url);
  return canvas;
}

const FORMS = {
  embed: () => ({ inputs: field("pg-inputs", "Inputs (one per line)", el("textarea", { rows: 4 })) }),
  rerank: () => ({ query: field("pg-query", "Query", el("input")), documents: field("pg-documents", "Documents (one per line)", el("textarea", { rows: 4 })) }),
  classify_text: () => ({ text: field("pg-text", "Text", el("textarea", { rows: 3 })), labels: field("pg-labels", "Labels (comma-separated, for zero-shot)", el("input")) }),
  classify_tokens: () => ({ text: field("pg-text", "Text", el("textarea", { rows: 3 })) }),
  answer_question: () => ({ question: field("pg-question", "Question", el("input")), context: field("pg-context", "Context", el("textarea", { rows: 4 })) }),
  translate: () => ({ text: field("pg-text", "Text", el("textarea", { rows: 3 })), source: field("pg-source", "Source language", el("input")), target: field("pg-target", "Target language", el("input")) }),
  summarize: () => ({ text: field("pg-text", "Text", el("textarea", { rows: 5 })) }),
  speak: () => ({ text: field("pg-text", "Text", el("textarea", { rows: 3 })) }),
  generate_image: () => ({ text: field("pg-text", "Prompt", el("textarea", { rows: 2 })), steps: field("pg-steps", "Steps", el("input", { type: "number", min: "1", value: "20" })) }),
  generate_video: () => ({ text: field("pg-text", "Prompt", el("textarea", { rows: 2 })), steps: field("pg-steps", "Steps", el("input", { type: "number", min: "1", value: "20" })),
                           frames: field("pg-frames", "Frames", el("input", { type: "number", min: "1", value: "8" })) }),
  detect_objects: () => ({ threshold: field("pg-threshold", "Threshold", el("input", { type: "number", step: "0.05", min: "0", max: "1", value: "0.5" })) }),
};

async function generateImage(model, prompt, steps, progress) {  // each diffusion step, then the image
  let done = null;
  for await (const line of ndjson("POST", "/api/images/generations", { model, prompt, steps })) {
    if (line.status === "step") { progress.max = line.steps; progress.value = line.step; }
    else if (line.status === "error") throw new Error(line.error.message);
    else if (line.status === "done") done = line;
  }
  progress.value = progress.max;
  return el("img", { src: `data:image/png;base64,${done.data[0].b64_json}`, alt: "generated image", class: "result-image" });
}

async function generateVideo(model, prompt, steps, frames, progress) {  // a /v1/videos job, polled for its progress
  let job = await json("POST", "/v1/videos", { model, prompt, steps, frames });
  progress.max = 100;
  while (job.status === "queued" || job.status === "in_progress") {
    await new Promise((r) => setTimeout(r, 300));
    job = await json("GET", `/v1/videos/${job.id}`);
    progress.value = job.progress || 0;
  }
  if (job.status !== "completed") throw new Error(job.error?.message || `the video job ${job.status}`);
  progress.value = 100;
  const blob = await (await request("GET", `/v1/videos/${job.id}/content`)).blob();
  return el("video", { controls: true, src: URL.createObjectURL(blob), class: "result-video" });
}

async function run(task, model, inputs, progress) {
  const value = (k) => inputs[k]?.querySelector("input, textarea")?.value ?? "";
  const file = inputs.file?.querySelector("input").files[0];
  if (FILES[task] && !file) throw new Error("choose a file first");
  if (task === "embed") {
    const texts = lines(value("inputs"));
    const data = await json("POST", "/v1/embeddings", { model, input: texts });
    const vectors = data.data.map((d) => d.embedding);
    return el("table", { class: "similarity" }, el("caption", { text: "Cosine similarity" }),
      el("tr", {}, el("th", {}), texts.map((t) => el("th", { scope: "col", text: t }))),
      texts.map((t, i) => el("tr", {}, el("th", { scope: "row", text: t }), vectors.map((v) => el("td", { text: cosine(vectors[i], v).toFixed(3) })))));
  }
  if (task === "rerank") {
    const docs = lines(value("documents"));
    const data = await json("POST", "/v1/rerank", { model, query: value("query"), documents: docs });
    return el("ol", { class: "ranked" }, data.results.map((r) => el("li", { text: `${docs[r.index]} — ${r.relevance_score.toFixed(4)}` })));
  }
  if (task === "classify_text") {
    const labels = value("labels").split(",").map((s) => s.trim()).filter(Boolean);
    const body = labels.length ? { inputs: value("text"), parameters: { candidate_labels: labels } } : { inputs: value("text") };
    const path = `/models/${encodeURI(model)}/pipeline/${labels.length ? "zero-shot-classification" : "text-classification"}`;
    return bars(labelsOf(await (await request("POST", path, body)).json()));
  }
  if (task === "classify_tokens") {
    const text = value("text");
    const entities = await (await hf(model, task, { inputs: text })).json();
    const out = el("p", { class: "entities" });
    let last = 0;
    for (const e of entities) {
      if (e.start > last) out.append(text.slice(last, e.start));
      out.append(el("mark", { title: `${e.entity_group || e.entity} ${(e.score * 100).toFixed(1)}%`, "data-entity": e.entity_group || e.entity }, text.slice(e.start, e.end)));
      last = e.end;
    }
    out.append(text.slice(last));
    return out;
  }
  if (task === "answer_question") {
    const data = await (await hf(model, task, { inputs: { question: value("question"), context: value("context") } })).json();
    const best = Array.isArray(data) ? data[0] : data;
    return el("p", { class: "answer", text: `${best.answer} (${(best.score * 100).toFixed(1)}%)` });
  }
  if (task === "translate" || task === "summarize") {
    const parameters = task === "translate" ? { src_lang: value("source") || undefined, tgt_lang: value("target") || undefined } : {};
    const data = await (await hf(model, task, { inputs: value("text"), parameters })).json();
    const first = Array.isArray(data) ? data[0] : data;
    return el("p", { class: "answer", text: first.translation_text ?? first.summary_text ?? "" });
  }
  if (task === "speak") {
    const blob = await (await hf(model, task, { inputs: value("text") })).blob();
    return el("audio", { controls: true, src: URL.createObjectURL(blob), class: "result-audio" });
  }
  if (task === "generate_image") return generateImage(model, value("text"), Number(value("steps")), progress);
  if (task === "generate_video") return generateVideo(model, value("text"), Number(value("steps")), Number(value("frames")), progress);
  const parameters = task === "detect_objects" ? { threshold: Number(value("threshold")) } : {};
  const response = await hf(model, task, { inputs: await base64(file), parameters });  // the file, base64 in JSON
  const data = await response.json();
  if (task === "detect_objects") {
    return picture(file, (ctx) => {
      ctx.lineWidth = 2; ctx.font = "12px sans-serif";
      data.forEach((d, i) => {
        const b = d.box; ctx.strokeStyle = ctx.fillStyle = COLORS[i % COLORS.length];
        ctx.strokeRect(b.xmin, b.ymin, b.xmax - b.xmin, b.ymax - b.ymin);
        ctx.fillText(`${d.label} ${(d.score * 100).toFixed(0)}%`, b.xmin + 2, b.ymin + 12);
      });
    }).then((canvas) => el("div", {}, canvas, el("ul", { class: "boxes" }, data.map((d) => el("li", { text: `${d.label} ${(d.score * 100).toFixed(1)}%` })))));
  }
  if (task === "segment_image") {
    return picture(file, async (ctx) => {
      ctx.globalAlpha = 0.45;
      for (const [i, s] of data.entries()) {
        const mask = new Image(); mask.src = `data:image/png;base64,${s.mask}`; await mask.decode();
        const tint = new OffscreenCanvas(mask.width, mask.height).getContext("2d");
        tint.drawImage(mask, 0, 0); tint.globalCompositeOperation = "source-in"; tint.fillStyle = COLORS[i % COLORS.length];
        tint.fillRect(0, 0, mask.width, mask.height);
        ctx.drawImage(tint.canvas, 0, 0, ctx.canvas.width, ctx.canvas.height);
      }
    }).then((canvas) => el("div", {}, canvas, el("ul", { class: "segments" }, data.map((s) => el("li", { text: s.label })))));
  }
  if (task === "describe_image") return el("p", { class: "answer", text: (Array.isArray(data) ? data[0] : data).generated_text });
  if (task === "transcribe") return el("p", { class: "answer", text: data.text });
  return bars(labelsOf(data));  // image, audio and video classification
}

function recorder(fileInput) {  // the microphone, recorded into the file input (then Run sends it)
  const button = el("button", { type: "button", text: "Record" });
  const said = el("span", { class: "muted", "aria-live": "polite" });
  let recording = null;
  button.addEventListener("click", async () => {
    if (recording) { recording.stop(); return; }
    let stream;
    try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); }
    catch (error) { said.textContent = `no microphone: ${error.message}`; return; }
    const parts = [];
    recording = new MediaRecorder(stream);
    recording.ondataavailable = (e) => parts.push(e.data);
    recording.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      const blob = new Blob(parts, { type: recording.mimeType || "audio/webm" });
      const files = new DataTransfer();
      files.items.add(new File([blob], "recording.webm", { type: blob.type }));
      fileInput.files = files.files;
      said.textContent = `recorded ${(blob.size / 1024).toFixed(1)} KB`;
      button.textContent = "Record";
      recording = null;
    };
    recording.start();
    button.textContent = "Stop recording";
    said.textContent = "recording…";
  });
  return el("div", { class: "row" }, button, said);
}

export async function render(view, params) {
  const rows = (await json("GET", "/api/models")).models.filter((m) => m.kind === "model");
  const model = el("select", { id: "pg-model" }, rows.map((m) => el("option", { value: m.name, text: m.name })));
  if (params.get("model")) model.value = params.get("model");
  const task = el("select", { id: "pg-task" });
  const form = el("form", { class: "playground" });
  const result = el("div", { class: "result", "aria-live": "polite" });
  const status = el("p", { role: "status", class: "muted" });

  function tasks() {
    const row = rows.find((m) => m.name === model.value);
    const offered = (row?.tasks || []).filter((t) => FORMS[t] || FILES[t] || t === "chat");
    task.replaceChildren(...offered.map((t) => el("option", { value: t, text: t.replaceAll("_", " ") })));
    build();
  }

  function build() {
    result.replaceChildren();
    status.textContent = "";
    if (task.value === "chat") {
      form.replaceChildren(el("p", {}, "Chat models have their own page: ", el("a", { href: `#/chat?model=${encodeURIComponent(model.value)}`, text: `chat with ${model.value}` })));
      return;
    }
    const inputs = FORMS[task.value] ? FORMS[task.value]() : {};
    if (FILES[task.value]) inputs.file = field("pg-file", "File", el("input", { type: "file", accept: FILES[task.value] }));
    if (task.value === "transcribe" && navigator.mediaDevices?.getUserMedia) inputs.record = recorder(inputs.file.querySelector("input"));
    const go = el("button", { type: "submit", class: "primary", text: "Run" });
    const progress = el("progress", { max: 1, value: 0, hidden: !task.value.startsWith("generate_"), "aria-label": "Progress" });
    form.replaceChildren(...Object.values(inputs), go, progress);
    form.onsubmit = async (event) => {
      event.preventDefault();
      go.disabled = true; status.textContent = "running…"; result.replaceChildren(); progress.value = 0;
      try { result.replaceChildren(await run(task.value, model.value, inputs, progress)); status.textContent = "done"; }
      catch (error) { status.textContent = `failed: ${error.message}`; }
      go.disabled = false;
    };
  }

  model.addEventListener("change", tasks);
  task.addEventListener("change", build);
  view.append(el("h1", { text: "Playground" }),
    el("div", { class: "row" }, el("div", {}, el("label", { for: "pg-model", text: "Model" }), model),
      el("div", {}, el("label", { for: "pg-task", text: "Task" }), task)), form, status, result);
  tasks();
}
