// The SNMN demo page. Pick a CLEVR image (or upload a PNG), ask "What color is the large rubber
// thing?", and this script shows what the JSON API returns: the answer, then for every step
// that did something (NoOp steps folded away) the module, the question words weighted by the
// step's text attention, the attention map over the image (a heat overlay drawn here, on a
// canvas) and the stack depth. Text goes into the page with textContent only, never as HTML.
"use strict";

const state = { info: null, offset: 0, pageSize: 12, chosen: null, image: null, busy: false };
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    throw new Error(`${response.status} ${response.statusText}: the server did not answer JSON`);
  }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ------------------------------------------------------------------------------------------
// Model information and the gallery
// ------------------------------------------------------------------------------------------

async function loadInfo() {
  const info = await api("/api/info");
  state.info = info;
  const model = info.model;
  $("model-info").textContent =
    `Model ${model.fingerprint || "?"} (${model.task}, ${model.steps} steps, ` +
    `${model.grid[0]}×${model.grid[1]} grid, ${model.words} words, ${model.answers} answers) · ` +
    `images: ${info.images.split} (${info.images.count}) · backbone ${info.features.backbone}`;
  if (!info.features.pretrained) {
    $("features-warning").textContent =
      `Features are not pretrained (${info.features.weights}): answers are far below ` +
      "published results.";
    $("features-warning").hidden = false;
  }
  $("question").maxLength = info.max_question_chars;
  if (!info.uploads.enabled) {
    $("upload").disabled = true;
    $("upload-note").textContent = info.uploads.problem;
  } else {
    const megabytes = (info.uploads.max_bytes / 1e6).toFixed(1);
    $("upload-note").textContent = `PNG up to ${megabytes} MB, ${info.uploads.max_side} px a side.`;
  }
}

async function loadPage(offset) {
  const page = await api(`/api/images?offset=${offset}&limit=${state.pageSize}`);
  state.offset = page.offset;
  const gallery = $("gallery");
  gallery.replaceChildren();
  for (const entry of page.images) {
    const thumb = element("img", "thumb");
    thumb.src = entry.url;
    thumb.alt = `image ${entry.id}`;
    thumb.dataset.id = entry.id;
    thumb.setAttribute("role", "listitem");
    thumb.addEventListener("click", () => chooseImage(entry, thumb));
    gallery.append(thumb);
  }
  const last = Math.min(page.offset + page.images.length, page.total);
  $("page-label").textContent = `${page.offset + 1}–${last} of ${page.total}`;
  $("previous-page").disabled = page.offset === 0;
  $("next-page").disabled = last >= page.total;
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the image could not be shown"));
    image.src = url;
  });
}

async function chooseImage(entry, thumb) {
  document.querySelectorAll(".thumb.selected").forEach((node) => node.classList.remove("selected"));
  thumb.classList.add("selected");
  state.chosen = { kind: "split", id: entry.id };
  $("picked-label").textContent = `Image ${entry.id} of ${state.info.images.split}`;
  showSuggestions(entry.questions);
  await showChosen(entry.url);
}

async function chooseUpload(file) {
  showError("");
  if (!file) return;
  const limits = state.info.uploads;
  if (file.type !== "image/png") {
    showError(`${file.name}: not a PNG image (${file.type || "unknown type"})`);
    return;
  }
  if (file.size > limits.max_bytes) {
    showError(`${file.name}: ${file.size.toLocaleString()} bytes; at most ` +
      `${limits.max_bytes.toLocaleString()} allowed`);
    return;
  }
  document.querySelectorAll(".thumb.selected").forEach((node) => node.classList.remove("selected"));
  state.chosen = { kind: "upload", file };
  $("picked-label").textContent = `Uploaded: ${file.name}`;
  showSuggestions([]);
  await showChosen(URL.createObjectURL(file));
}

async function showChosen(url) {
  try {
    state.image = await loadImage(url);
  } catch (error) {
    state.image = null;
    showError(error.message);
    return;
  }
  drawImage($("picked-image"), null, null);
  $("result").hidden = true;
}

function showSuggestions(questions) {
  const box = $("suggestions");
  box.replaceChildren();
  for (const text of questions) {
    const button = element("button", "suggestion", text);
    button.type = "button";
    button.addEventListener("click", () => {
      $("question").value = text;
      ask();
    });
    box.append(button);
  }
}

// ------------------------------------------------------------------------------------------
// Asking and showing the reasoning
// ------------------------------------------------------------------------------------------

async function ask() {
  showError("");
  const question = $("question").value;
  if (!state.chosen) return showError("Choose an image first.");
  if (!question.trim()) return showError("Type a question about the image.");
  if (state.busy) return;
  state.busy = true;
  $("ask").disabled = true;
  try {
    let reasoning;
    if (state.chosen.kind === "split") {
      reasoning = await api("/api/ask", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ image_id: state.chosen.id, question }),
      });
    } else {
      reasoning = await api(`/api/ask/upload?question=${encodeURIComponent(question)}`, {
        method: "POST",
        headers: { "Content-Type": "image/png" },
        body: state.chosen.file,
      });
    }
    showReasoning(reasoning);
  } catch (error) {
    showError(error.message);
  } finally {
    state.busy = false;
    $("ask").disabled = false;
  }
}

function showReasoning(reasoning) {
  $("result").hidden = false;
  const box = reasoning.box;
  if (reasoning.answer !== null) {
    $("answer").textContent = reasoning.answer;
  } else if (box) {
    $("answer").textContent = `the box at x ${box.x.toFixed(0)}, y ${box.y.toFixed(0)}, ` +
      `${box.width.toFixed(0)}×${box.height.toFixed(0)} px`;
  }
  const list = $("top-answers");
  list.replaceChildren();
  for (const score of reasoning.top_answers) {
    const item = element("li", "", `${score.name} ${(100 * score.probability).toFixed(1)}%`);
    const bar = element("span", "bar");
    bar.style.width = `${Math.round(80 * score.probability)}px`;
    item.append(bar);
    list.append(item);
  }
  const unknown = $("unknown-words");
  unknown.hidden = reasoning.unknown_words.length === 0;
  unknown.textContent = "Not in the vocabulary (read as <unk>, answered anyway): " +
    reasoning.unknown_words.join(", ");
  const folded = reasoning.folded_steps;
  $("folded").textContent = folded.length
    ? `${folded.length} NoOp step(s) folded away (steps ${folded.join(", ")}).`
    : "Every step ran a module.";
  const steps = $("steps");
  steps.replaceChildren();
  reasoning.steps.forEach((step, position) => {
    const isLast = position === reasoning.steps.length - 1;
    steps.append(stepCard(step, reasoning, isLast ? box : null));
  });
  drawImage($("picked-image"), null, box ? [box, reasoning] : null);
}

function stepCard(step, reasoning, box) {
  const card = element("div", "step");
  card.dataset.step = step.step;
  card.append(element("h3", "", `Step ${step.step}: ${step.module} ` +
    `(${(100 * step.probability).toFixed(0)}%)`));
  const words = element("div", "words");
  const strongest = Math.max(...step.word_attention, 1e-6);
  reasoning.words.forEach((word, i) => {
    const span = element("span", word.known ? "word" : "word unknown", word.text);
    const weight = step.word_attention[i] / strongest;
    span.style.background = `rgba(232, 89, 12, ${(0.85 * weight).toFixed(3)})`;
    span.title = `attention ${step.word_attention[i].toFixed(3)}` +
      (word.known ? "" : " (unknown word)");
    words.append(span);
  });
  card.append(words);
  const canvas = element("canvas");
  canvas.width = 240;
  canvas.height = 160;
  drawImage(canvas, step.attention, box ? [box, reasoning] : null);
  card.append(canvas);
  const others = step.modules.map((m) => `${m.name} ${(100 * m.probability).toFixed(0)}%`);
  card.append(element("p", "modules", `modules: ${others.join(", ")}`));
  const cellCount = step.attention.length * step.attention[0].length;
  const peak = Math.max(...step.attention.flat());
  card.append(element("p", "modules", `attention peak ${(100 * peak).toFixed(1)}% of the ` +
    `image on one cell (uniform: ${(100 / cellCount).toFixed(1)}%)`));
  card.append(element("p", "depth", `stack depth after the step: ${step.stack_depth}`));
  return card;
}

// The image, an optional [H][W] attention map, an optional predicted box. Attention is shown
// relative to the step's strongest cell: cells it ignores are dimmed, cells it attends to get
// a warm tint; a map close to uniform therefore leaves the picture nearly as it is.
function drawImage(canvas, attention, boxed) {
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (state.image) context.drawImage(state.image, 0, 0, canvas.width, canvas.height);
  if (attention) {
    const strongest = Math.max(...attention.flat(), 1e-9);
    const dim = (v) => [0, 0, 0, 170 * (1 - v)];
    const heat = (v) => [255, 60 + 160 * v, 0, 110 * v];
    context.imageSmoothingEnabled = true;
    for (const colour of [dim, heat]) {
      const layer = gridImage(attention, (value) => colour(value / strongest));
      context.drawImage(layer, 0, 0, canvas.width, canvas.height);
    }
  }
  if (boxed) {
    const [box, reasoning] = boxed;
    const sx = canvas.width / reasoning.image_width;
    const sy = canvas.height / reasoning.image_height;
    context.strokeStyle = "#00e5ff";
    context.lineWidth = 3;
    context.strokeRect(box.x * sx, box.y * sy, box.width * sx, box.height * sy);
  }
}

// A canvas of one pixel per grid cell, coloured by `colour(value)` → [r, g, b, a].
function gridImage(attention, colour) {
  const grid = document.createElement("canvas");
  grid.width = attention[0].length;
  grid.height = attention.length;
  const context = grid.getContext("2d");
  const cells = context.createImageData(grid.width, grid.height);
  attention.flat().forEach((value, i) => cells.data.set(colour(value).map(Math.round), 4 * i));
  context.putImageData(cells, 0, 0);
  return grid;
}

// ------------------------------------------------------------------------------------------

window.addEventListener("DOMContentLoaded", async () => {
  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    ask();
  });
  $("upload").addEventListener("change", (event) => chooseUpload(event.target.files[0]));
  $("previous-page").addEventListener("click", () =>
    loadPage(Math.max(0, state.offset - state.pageSize)).catch((e) => showError(e.message)));
  $("next-page").addEventListener("click", () =>
    loadPage(state.offset + state.pageSize).catch((e) => showError(e.message)));
  try {
    await loadInfo();
    await loadPage(0);
    document.body.dataset.ready = "true";
  } catch (error) {
    showError(`The demo could not start: ${error.message}`);
  }
});
