// The samsvc web console: the page's shared state (API key, model, the chosen image, the
// notice line) and its tabs; the views are in views.js.

import { ApiError, apiKey, call, setApiKey } from "./api.js";
import { loadImage } from "./masks.js";
import { batchView, clickView, jobsView, segmentView } from "./views.js";

const $ = (id) => document.getElementById(id);

const app = {
  file: null,
  image: null,
  jobId: "",
  onImage: [],
  onShow: {},
  model: () => $("model").value,
  notify(error) {
    const notice = $("notice");
    if (error instanceof ApiError && error.status === 401) {
      notice.textContent = "This server needs an API key: enter yours in the API key field above, then try again.";
      $("api-key").focus();
    } else if (error instanceof ApiError && error.violations.length) {
      notice.textContent = error.violations.map((v) => `${v.field}: ${v.description}`).join("; ");
    } else {
      notice.textContent = error.message || String(error);
    }
    notice.hidden = false;
  },
  clear() {
    $("notice").hidden = true;
  },
  async choose(file) {
    if (!file) return;
    try {
      this.image = await loadImage(file);
      this.file = file;
      this.clear();
      for (const listener of this.onImage) listener();
    } catch (error) {
      this.notify(error);
    }
  },
  dropZone(zone, onFiles, folders = false) {
    zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", async (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      const entries = [...event.dataTransfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
      if (folders && entries.some((entry) => entry.isDirectory)) onFiles(await filesOf(entries));
      else onFiles(event.dataTransfer.files);
    });
  },
};

// Every file under dropped folders (and dropped files), in name order.
async function filesOf(entries) {
  const files = [];
  const walk = async (entry) => {
    if (entry.isFile) {
      files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
  };
  for (const entry of entries) await walk(entry);
  return files.sort((a, b) => a.name.localeCompare(b.name));
}

async function loadModels() {
  const select = $("model");
  try {
    const answer = await call("GET", "/api/v1/models?page_size=100");
    const models = answer.models || [];
    // Models whose weights are here first (the others load only where the server downloads).
    const present = models.filter((m) => m.weights_present);
    const usable = present.length ? present : models;
    select.replaceChildren(
      ...usable.map((m) => {
        const option = document.createElement("option");
        option.value = m.name;
        option.textContent = `${m.name}${m.family === "MODEL_FAMILY_SAM2" ? " (SAM 2)" : ""}`;
        return option;
      }),
    );
    const remembered = sessionStorage.getItem("samsvc.model");
    if (remembered && usable.some((m) => m.name === remembered)) select.value = remembered;
    app.clear();
  } catch (error) {
    app.notify(error);
  }
}

function showTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !selected;
  }
  app.onShow[name]?.();
}

function start() {
  $("api-key").value = apiKey();
  $("api-key").addEventListener("change", (event) => {
    setApiKey(event.target.value.trim());
    loadModels();
  });
  const tabs = [...document.querySelectorAll("[role=tab]")];
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => showTab(tab.id.slice(4)));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = tabs[(i + step + tabs.length) % tabs.length];
      next.focus();
      showTab(next.id.slice(4));
    });
  });
  $("model").addEventListener("change", (event) => sessionStorage.setItem("samsvc.model", event.target.value));
  $("file").addEventListener("change", (event) => app.choose(event.target.files[0]));
  $("click-file").addEventListener("change", (event) => app.choose(event.target.files[0]));
  app.dropZone($("drop"), (files) => app.choose(files[0]));
  segmentView(app);
  clickView(app);
  batchView(app);
  jobsView(app);
  // A batch this tab was watching before a reload is resumed (views.js): show it.
  showTab(sessionStorage.getItem("samsvc.watchedJob") ? "batch" : "segment");
  loadModels();
}

start();
