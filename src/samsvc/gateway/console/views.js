// The console's four views. Each is built once with the shared `app` (notice, model, the
// chosen image) and uses only the public REST API.

import { call, fileBase64, stream } from "./api.js";
import { cocoDocument, colour, decodeRle, drawMasks, loadImage } from "./masks.js";

const $ = (id) => document.getElementById(id);
const RLE = "MASK_FORMAT_RLE";

// The generation options set under Segment (batches use them too).
function generationOptions() {
  return {
    points_per_side: Number($("pps").value),
    pred_iou_thresh: Number($("iou").value),
    stability_score_thresh: Number($("stability").value),
    box_nms_thresh: Number($("nms").value),
  };
}

function withPixels(masks) {
  return masks.map((m) => ({ ...m, area: Number(m.area), decoded: decodeRle(m.rle) }));
}

function download(name, blob) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// --- Segment: automatic masks drawn over the image -----------------------------------------

export function segmentView(app) {
  const canvas = $("segment-canvas");
  const tooltip = $("tooltip");
  const list = $("mask-list");
  let masks = [];
  let visible = [];
  let top = null;
  let hovered = -1;

  const redraw = () => {
    if (app.image) top = drawMasks(canvas, app.image, masks, visible, hovered);
  };

  app.onImage.push(() => {
    masks = [];
    visible = [];
    list.replaceChildren();
    redraw();
    $("run-segment").disabled = false;
    $("download-coco").disabled = $("download-png").disabled = true;
  });

  $("run-segment").addEventListener("click", async () => {
    const status = $("segment-status");
    status.textContent = "Segmenting…";
    $("run-segment").disabled = true;
    try {
      const answer = await call("POST", "/api/v1/segment", {
        image: await fileBase64(app.file),
        model_type: app.model(),
        mask_format: RLE,
        ...generationOptions(),
      });
      masks = withPixels(answer.masks);
      visible = masks.map(() => true);
      list.replaceChildren(...masks.map((m, i) => maskItem(m, i)));
      status.textContent = `${masks.length} masks from ${answer.model_type} in ${answer.processing_time.toFixed(2)} s`;
      status.dataset.masks = String(masks.length);
      $("download-coco").disabled = $("download-png").disabled = false;
      redraw();
    } catch (error) {
      status.textContent = "";
      app.notify(error);
    } finally {
      $("run-segment").disabled = false;
    }
  });

  function maskItem(mask, index) {
    const item = document.createElement("li");
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.addEventListener("change", () => {
      visible[index] = box.checked;
      redraw();
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour(index);
    label.append(box, swatch, `area ${mask.area}, IoU ${mask.predicted_iou.toFixed(3)}, stability ${mask.stability_score.toFixed(3)}`);
    item.append(label);
    item.addEventListener("mouseenter", () => { hovered = index; redraw(); });
    item.addEventListener("mouseleave", () => { hovered = -1; redraw(); });
    return item;
  }

  canvas.addEventListener("mousemove", (event) => {
    if (!top) return;
    const bounds = canvas.getBoundingClientRect();
    const x = Math.floor(((event.clientX - bounds.left) * canvas.width) / bounds.width);
    const y = Math.floor(((event.clientY - bounds.top) * canvas.height) / bounds.height);
    const index = top[y * canvas.width + x] ?? -1;
    if (index < 0) {
      tooltip.hidden = true;
      return;
    }
    const m = masks[index];
    tooltip.textContent = `#${index + 1}: area ${m.area}, predicted IoU ${m.predicted_iou.toFixed(3)}, stability ${m.stability_score.toFixed(3)}`;
    tooltip.style.left = `${event.clientX - bounds.left + 12}px`;
    tooltip.style.top = `${event.clientY - bounds.top + 12}px`;
    tooltip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tooltip.hidden = true; });

  $("download-coco").addEventListener("click", () => {
    const kept = masks.filter((_, i) => visible[i]);
    const document_ = cocoDocument(app.file.name, app.image.width, app.image.height, kept);
    download(`${app.file.name}.coco.json`, new Blob([JSON.stringify(document_)], { type: "application/json" }));
  });
  $("download-png").addEventListener("click", () => {
    canvas.toBlob((blob) => download(`${app.file.name}.masks.png`, blob), "image/png");
  });
}

// --- Click to segment: an image session, prompts answered from its embedding ------------------

export function clickView(app) {
  const canvas = $("click-canvas");
  const status = $("click-status");
  let session = "";
  let points = [];
  let box = null;
  let answers = [];
  let chosen = 0;
  let dragFrom = null;
  let cursor = null;
  let pending = 0;

  app.onImage.push(() => {
    session = "";
    points = [];
    box = null;
    answers = [];
    redraw();
  });

  function redraw() {
    if (!app.image) return;
    const shown = answers.length ? [answers[chosen]] : [];
    drawMasks(canvas, app.image, shown, shown.map(() => true));
    const context = canvas.getContext("2d");
    for (const p of points) {
      context.fillStyle = p.background ? "#e11" : "#1c1";
      context.beginPath();
      context.arc(p.x, p.y, Math.max(3, canvas.width / 150), 0, 2 * Math.PI);
      context.fill();
    }
    if (box) {
      context.strokeStyle = "#06f";
      context.lineWidth = Math.max(2, canvas.width / 400);
      context.strokeRect(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0);
    }
    if (cursor) {
      context.strokeStyle = "#000";
      context.strokeRect(cursor.x - 6, cursor.y - 6, 12, 12);
    }
    $("undo").disabled = $("clear").disabled = !points.length && !box;
    $("choices").replaceChildren(
      ...answers.map((m, i) => {
        const button = document.createElement("button");
        button.textContent = `mask ${i + 1} (IoU ${m.predicted_iou.toFixed(2)})`;
        button.setAttribute("aria-pressed", String(i === chosen));
        button.addEventListener("click", () => { chosen = i; redraw(); });
        return button;
      }),
    );
  }

  async function ask() {
    if (!points.length && !box) {
      answers = [];
      redraw();
      return;
    }
    const asked = ++pending;
    status.textContent = "…";
    try {
      if (!session) {
        const created = await call("POST", "/api/v1/images", { image: await fileBase64(app.file), model_type: app.model() });
        session = created.image_id;
      }
      const prompt = { points: points.map((p) => ({ x: p.x, y: p.y, background: p.background })) };
      if (box) prompt.box = { x0: box.x0, y0: box.y0, x1: box.x1, y1: box.y1 };
      const started = performance.now();
      const answer = await call("POST", "/api/v1/segment/prompts", {
        image_id: session,
        prompts: [prompt],
        multimask_output: $("multimask").checked,
        mask_format: RLE,
      });
      if (asked !== pending) return; // a newer click's answer is on its way
      answers = withPixels(answer.results[0].masks);
      chosen = answers.reduce((best, m, i) => (m.predicted_iou > answers[best].predicted_iou ? i : best), 0);
      status.textContent = `${answers.length} candidate mask(s) in ${Math.round(performance.now() - started)} ms`;
      status.dataset.answers = String(Number(status.dataset.answers || 0) + 1);
      redraw();
    } catch (error) {
      status.textContent = "";
      if (error.reason === "IMAGE_SESSION_EXPIRED") session = "";
      app.notify(error);
    }
  }

  const at = (event) => {
    const bounds = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - bounds.left) * canvas.width) / bounds.width,
      y: ((event.clientY - bounds.top) * canvas.height) / bounds.height,
    };
  };
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("mousedown", (event) => { if (app.image) dragFrom = { ...at(event), right: event.button === 2 }; });
  canvas.addEventListener("mouseup", (event) => {
    if (!dragFrom) return;
    const to = at(event);
    const from = dragFrom;
    dragFrom = null;
    if (Math.hypot(to.x - from.x, to.y - from.y) > Math.max(6, canvas.width / 100)) {
      box = { x0: Math.min(from.x, to.x), y0: Math.min(from.y, to.y), x1: Math.max(from.x, to.x), y1: Math.max(from.y, to.y) };
    } else {
      points.push({ x: to.x, y: to.y, background: event.shiftKey || from.right });
    }
    ask();
  });
  canvas.addEventListener("keydown", (event) => {
    if (!app.image) return;
    cursor = cursor || { x: canvas.width / 2, y: canvas.height / 2 };
    const step = Math.max(1, Math.round(canvas.width / 50));
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[event.key]) {
      cursor.x = Math.min(canvas.width - 1, Math.max(0, cursor.x + moves[event.key][0]));
      cursor.y = Math.min(canvas.height - 1, Math.max(0, cursor.y + moves[event.key][1]));
      redraw();
    } else if (event.key === "Enter") {
      points.push({ x: cursor.x, y: cursor.y, background: event.shiftKey });
      ask();
    } else if (event.key === "Backspace") {
      undo();
    } else {
      return;
    }
    event.preventDefault();
  });
  function undo() {
    if (box && !points.length) box = null;
    else points.pop();
    ask();
  }
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", () => { points = []; box = null; ask(); });
  $("multimask").addEventListener("change", ask);
}

// --- Batches: submit, watch each image's masks arrive, resume after a reload, cancel ----------

const WATCHED = "samsvc.watchedJob";

export function resultItem(result, file) {
  const item = document.createElement("li");
  item.dataset.index = String(result.index);
  const title = document.createElement("div");
  if (result.error && result.error.code) {
    item.className = "failed";
    title.textContent = `#${result.index}: ${result.error.message}`;
    item.append(title);
    return item;
  }
  const masks = withPixels(result.masks || []);
  title.textContent = `#${result.index}: ${masks.length} masks`;
  item.dataset.masks = String(masks.length);
  item.append(title);
  if (file) {
    const canvas = document.createElement("canvas");
    item.append(canvas);
    loadImage(file).then((image) => drawMasks(canvas, image, masks, masks.map(() => true)));
  }
  return item;
}

export function batchView(app) {
  const results = $("batch-results");
  const status = $("batch-status");
  let files = [];
  let watching = null;

  const choose = (chosen) => {
    files = [...chosen].filter((f) => /^image\/(jpeg|png|webp)$/.test(f.type));
    $("submit-batch").disabled = !files.length;
    status.textContent = `${files.length} image(s) chosen`;
  };
  $("batch-files").addEventListener("change", (event) => choose(event.target.files));
  $("batch-folder").addEventListener("change", (event) => choose(event.target.files));
  app.dropZone($("batch-drop"), choose, true);

  async function watch(jobId, cursor) {
    watching?.abort();
    watching = new AbortController();
    $("cancel-batch").disabled = false;
    let seen = cursor;
    const path = `/api/v1/jobs/${encodeURIComponent(jobId)}/events${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ""}`;
    try {
      await stream("GET", path, undefined, (event) => {
        seen = event.cursor || seen;
        sessionStorage.setItem(WATCHED, JSON.stringify({ jobId, cursor: seen }));
        if (event.image) results.append(resultItem(event.image, files[event.image.index]));
        if (event.progress) status.textContent = `job ${jobId}: ${event.progress.processed_images} of ${event.progress.total_images} done`;
        if (event.finished) {
          const job = event.finished.job;
          status.textContent = `job ${jobId}: ${job.status.replace("JOB_STATUS_", "").toLowerCase()}, ${job.processed_images} of ${job.total_images} images, ${job.failed_images} failed`;
          status.dataset.finished = job.status;
          sessionStorage.removeItem(WATCHED);
          $("cancel-batch").disabled = true;
        }
      }, watching.signal);
    } catch (error) {
      if (error.name !== "AbortError") app.notify(error);
    }
  }

  $("submit-batch").addEventListener("click", async () => {
    $("submit-batch").disabled = true;
    results.replaceChildren();
    delete status.dataset.finished;
    try {
      const body = {
        images: await Promise.all(files.map(fileBase64)),
        options: {
          model_type: app.model(),
          mask_format: RLE,
          ...generationOptions(),
        },
        priority: $("priority").value,
      };
      if ($("webhook").value) body.webhook_url = $("webhook").value;
      const accepted = await call("POST", "/api/v1/segment/batch", body);
      app.jobId = accepted.job_id;
      status.textContent = `job ${accepted.job_id} accepted: ${accepted.total_images} image(s)`;
      await watch(accepted.job_id, "");
    } catch (error) {
      app.notify(error);
    } finally {
      $("submit-batch").disabled = !files.length;
    }
  });

  $("cancel-batch").addEventListener("click", async () => {
    const watched = JSON.parse(sessionStorage.getItem(WATCHED) || "null");
    const jobId = watched?.jobId || app.jobId;
    if (!jobId) return;
    try {
      await call("DELETE", `/api/v1/jobs/${encodeURIComponent(jobId)}`);
    } catch (error) {
      app.notify(error);
    }
  });

  // After a reload: go on watching the job this tab was following, after the last event seen.
  const watched = JSON.parse(sessionStorage.getItem(WATCHED) || "null");
  if (watched?.jobId) {
    status.textContent = `resuming job ${watched.jobId}`;
    watch(watched.jobId, watched.cursor);
  }
}

// --- Jobs: the caller's jobs, filtered and paged; a job's results ------------------------------

export function jobsView(app) {
  const body = document.querySelector("#jobs tbody");
  let next = "";

  async function load(token) {
    const query = new URLSearchParams({ page_size: "10" });
    if ($("job-filter").value) query.set("status", $("job-filter").value);
    if (token) query.set("page_token", token);
    try {
      const page = await call("GET", `/api/v1/jobs?${query}`);
      next = page.next_page_token || "";
      $("next-jobs").disabled = !next;
      body.replaceChildren(...(page.jobs || []).map(row));
    } catch (error) {
      app.notify(error);
    }
  }

  function row(job) {
    const tr = document.createElement("tr");
    const created = job.created_at ? new Date(job.created_at).toLocaleString() : "";
    for (const text of [job.job_id, job.job_type.replace("JOB_TYPE_", "").toLowerCase(),
      job.status.replace("JOB_STATUS_", "").toLowerCase(), `${job.processed_images}/${job.total_images}`,
      String(job.failed_images), created]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    const open = document.createElement("button");
    open.textContent = "Open results";
    open.addEventListener("click", () => results(job.job_id));
    const td = document.createElement("td");
    td.append(open);
    tr.append(td);
    return tr;
  }

  let shownJob = "";
  let moreResults = "";

  async function results(jobId, token = "") {
    const query = new URLSearchParams({ page_size: "50" });
    if (token) query.set("page_token", token);
    try {
      const page = await call("GET", `/api/v1/jobs/${encodeURIComponent(jobId)}/results?${query}`);
      const items = (page.results || []).map((r) => resultItem(r, null));
      if (token) $("job-results").append(...items);
      else $("job-results").replaceChildren(...items);
      shownJob = jobId;
      moreResults = page.next_page_token || "";
      $("more-results").hidden = !moreResults;
      $("job-results-status").textContent = `job ${jobId}: ${$("job-results").children.length} result(s) shown`;
    } catch (error) {
      app.notify(error);
    }
  }

  $("more-results").addEventListener("click", () => results(shownJob, moreResults));
  $("refresh-jobs").addEventListener("click", () => load(""));
  $("job-filter").addEventListener("change", () => load(""));
  $("next-jobs").addEventListener("click", () => load(next));
  app.onShow.jobs = () => load("");
}
