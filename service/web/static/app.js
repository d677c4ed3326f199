/* FEQA web form. No framework, no build step: plain DOM code served by the API itself. */
"use strict";

(function () {
  const API = document.body.dataset.api || "";
  const MEANINGS = ["normal", "slight", "mild", "moderate", "severe"];
  const TERMINAL = new Set(["succeeded", "failed", "partly_failed", "cancelled", "deleted"]);
  const VIDEO_EXT = /\.(mp4|m4v|mov|webm|mkv|avi|3gp|ogv|mpg|mpeg)$/i;
  const RECORDER_TYPES = ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm", "video/mp4"];
  const POLL_MS = 1000;
  const MAX_BYTES = Number(document.body.dataset.maxBytes) || 0;
  const MAX_SECONDS = Number(document.body.dataset.maxSeconds) || 0;
  // Failures that are a verdict on the video, not a fault: shown as "not scored", with what to do.
  const QUALITY_CODES = new Set(["no_face", "face_too_rare", "several_faces", "video_too_short", "face_too_small",
    "too_dark", "not_scorable"]);

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const chosen = new Map(); // expression -> File (from the input, a drop or a recording)
  let session = { authenticated: false };
  let pollTimer = null;
  let reportFor = null;     // the assessment whose report is on screen
  let picturePolls = 0;     // polls spent waiting for pictures drawn after the result

  // ---------------------------------------------------------------- helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "className") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  async function api(method, path, opts) {
    const init = Object.assign({ method, credentials: "same-origin", headers: {} }, opts || {});
    init.headers = Object.assign({ Accept: "application/json" }, init.headers);
    let res;
    try {
      res = await fetch(API + path, init);
    } catch (e) {
      throw { status: 0, code: "network_error", detail: "The server could not be reached. Check the connection and try again." };
    }
    const type = res.headers.get("content-type") || "";
    const body = type.includes("json") ? await res.json().catch(() => ({})) : {};
    if (!res.ok) throw Object.assign({ status: res.status }, body, { code: body.code || "http_" + res.status });
    return body;
  }

  function describe(problem) {
    return (problem.detail || problem.title || "Request failed") + " (" + (problem.code || problem.status) + ")";
  }

  function setFieldError(input, errorNode, message) {
    if (message) {
      errorNode.textContent = message;
      errorNode.hidden = false;
      input.setAttribute("aria-invalid", "true");
    } else {
      errorNode.textContent = "";
      errorNode.hidden = true;
      input.removeAttribute("aria-invalid");
    }
  }

  function taskError(expression, message) {
    setFieldError($("#file-" + expression), $("#error-" + expression), message);
    if (message) $("#task-" + expression).classList.add("invalid");
    else $("#task-" + expression).classList.remove("invalid");
  }

  function activeProtocol() {
    return $("input[name=protocol]:checked").value;
  }

  function activeTasks() {
    return $$(`.tasks[data-protocol="${activeProtocol()}"] .task`);
  }

  function titleOf(expression) {
    const legend = $("#task-" + expression + " legend");
    return legend ? legend.textContent.replace(/^\d+\.\s*/, "") : expression;
  }

  function fmtTime(seconds) {
    const s = Math.floor(seconds);
    return String(Math.floor(s / 60)).padStart(2, "0") + ":" + String(s % 60).padStart(2, "0");
  }

  function fmtSize(bytes) {
    return bytes > 1e6 ? (bytes / 1e6).toFixed(1) + " MB" : Math.max(1, Math.round(bytes / 1e3)) + " kB";
  }

  // ---------------------------------------------------------------- sign-in
  async function refreshSession() {
    try {
      session = await api("GET", "/v1/session");
    } catch (e) {
      session = { authenticated: false, anonymous_allowed: document.body.dataset.anonymousAllowed === "true" };
    }
    const signedIn = $("#signed-in");
    const form = $("#sign-in");
    if (session.authenticated && session.method !== "anonymous") {
      $("#auth-state").textContent = "Signed in" + (session.tenant ? " – " + session.tenant : "");
      signedIn.hidden = false;
      form.hidden = true;
    } else {
      signedIn.hidden = true;
      form.hidden = false;
      if (session.method === "anonymous") {
        $("#api-key-hint").textContent = "Not signed in: this server allows use without a key from this computer.";
      }
    }
    loadModels();
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("#api-key");
    const err = $("#api-key-error");
    if (!input.value.trim()) {
      setFieldError(input, err, "Enter your API key.");
      input.focus();
      return;
    }
    try {
      await api("POST", "/v1/session", {
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ api_key: input.value.trim() }),
      });
      input.value = "";
      setFieldError(input, err, "");
      await refreshSession();
      $("#sign-out").focus();
    } catch (p) {
      setFieldError(input, err, describe(p));
      input.focus();
    }
  }

  async function signOut() {
    try { await api("DELETE", "/v1/session"); } catch (e) { /* the cookie is gone either way */ }
    await refreshSession();
    $("#api-key").focus();
  }

  // ---------------------------------------------------------------- model facts
  function trainedOnText(model) {
    const t = String(model.trained_on || "unknown");
    if (t === "simulated") return "simulated data (synthetic patients, no real recordings)";
    if (t === "untrained") return "nothing (an untrained model with random weights)";
    if (t.startsWith("clinical:")) return "clinical recordings: " + t.slice("clinical:".length);
    return t;
  }

  function notClinicalReason(model) {
    if (!model) return null;
    const t = String(model.trained_on || "");
    if (model.clinical_use === true && t.startsWith("clinical:")) return null;
    if (t === "simulated") return "Not for clinical use: trained on simulated data.";
    if (t === "untrained") return "Not for clinical use: untrained model (random weights), not trained on any data.";
    return "Not for clinical use: this model is not approved for clinical use (trained on: " + (t || "unknown") + ").";
  }

  async function loadModels() {
    const box = $("#model-warning");
    let models = [];
    try {
      const body = await api("GET", "/v1/models");
      models = Array.isArray(body) ? body : body.models || body.items || [];
    } catch (e) {
      box.hidden = true;
      return;
    }
    const reasons = Array.from(new Set(models.map(notClinicalReason).filter(Boolean)));
    box.textContent = reasons.length ? reasons.join(" ") + " Scores are for demonstration and testing only." : "";
    box.hidden = !reasons.length;
  }

  // ---------------------------------------------------------------- choosing videos
  function acceptFile(expression, file, origin) {
    taskError(expression, "");
    const looksLikeVideo = (file.type && file.type.startsWith("video/")) || (!file.type && VIDEO_EXT.test(file.name));
    if (!looksLikeVideo) {
      chosen.delete(expression);
      $("#file-" + expression).value = "";
      updateChosen(expression);
      taskError(expression, "“" + file.name + "” is not a video file (type " + (file.type || "unknown") +
        "). Choose a video such as MP4, MOV or WebM. (unsupported_media_type)");
      return false;
    }
    if (file.size === 0) {
      chosen.delete(expression);
      updateChosen(expression);
      taskError(expression, "“" + file.name + "” is empty. (empty_file)");
      return false;
    }
    if (MAX_BYTES && file.size > MAX_BYTES) {
      chosen.delete(expression);
      $("#file-" + expression).value = "";
      updateChosen(expression);
      taskError(expression, "“" + file.name + "” is " + fmtSize(file.size) + "; the limit is " + fmtSize(MAX_BYTES) +
        ". Trim the video or record a shorter one. (upload_too_large)");
      return false;
    }
    chosen.set(expression, file);
    updateChosen(expression, origin);
    return true;
  }

  function updateChosen(expression, origin) {
    const file = chosen.get(expression);
    const out = $("#chosen-" + expression);
    const clear = $(`.clear[data-expression="${expression}"]`);
    if (!file) {
      out.textContent = "";
      clear.hidden = true;
      return;
    }
    out.textContent = (origin || "Chosen") + ": " + file.name + " (" + fmtSize(file.size) + ")";
    clear.hidden = false;
  }

  function wireTasks() {
    for (const input of $$("input[type=file][data-expression]")) {
      input.addEventListener("change", () => {
        const expr = input.dataset.expression;
        if (input.files.length) acceptFile(expr, input.files[0], "Chosen");
        else { chosen.delete(expr); updateChosen(expr); }
      });
    }
    for (const zone of $$("[data-drop]")) {
      const expr = zone.dataset.drop;
      zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
      zone.addEventListener("dragleave", () => zone.classList.remove("over"));
      zone.addEventListener("drop", (e) => {
        e.preventDefault();
        zone.classList.remove("over");
        const file = e.dataTransfer && e.dataTransfer.files[0];
        if (file) acceptFile(expr, file, "Dropped");
      });
    }
    for (const btn of $$("button.clear")) {
      btn.addEventListener("click", () => {
        const expr = btn.dataset.expression;
        chosen.delete(expr);
        $("#file-" + expr).value = "";
        taskError(expr, "");
        updateChosen(expr);
        $("#file-" + expr).focus();
      });
    }
    for (const btn of $$("button.record")) btn.addEventListener("click", () => openRecorder(btn.dataset.expression));
    for (const radio of $$("input[name=protocol]")) radio.addEventListener("change", switchProtocol);
  }

  function switchProtocol() {
    const proto = activeProtocol();
    for (const block of $$(".tasks")) {
      const on = block.dataset.protocol === proto;
      block.hidden = !on;
      for (const ctl of $$("input, button", block)) ctl.disabled = !on;
    }
    closeRecorder();
  }

  // ---------------------------------------------------------------- webcam recording
  const rec = { expression: null, stream: null, recorder: null, chunks: [], started: 0, tick: null, type: "" };

  function pickRecorderType() {
    if (!window.MediaRecorder) return null;
    for (const t of RECORDER_TYPES) {
      if (typeof MediaRecorder.isTypeSupported !== "function" || MediaRecorder.isTypeSupported(t)) return t;
    }
    return "";
  }

  async function openRecorder(expression) {
    const panel = $("#recorder");
    const status = $("#rec-status");
    closeRecorder();
    rec.expression = expression;
    $("#task-" + expression).append(panel);
    panel.hidden = false;
    $("#recorder-title").textContent = "Webcam recording – " + titleOf(expression);
    $("#rec-time").textContent = "00:00";
    $("#countdown").textContent = "";
    $("#rec-start").disabled = true;
    $("#rec-stop").disabled = true;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      status.textContent = "This browser cannot use the webcam here (it needs a secure HTTPS address). Upload a file instead.";
      return;
    }
    rec.type = pickRecorderType();
    if (rec.type === null) {
      status.textContent = "This browser cannot record video. Upload a file instead.";
      return;
    }
    status.textContent = "Starting the camera…";
    try {
      rec.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 }, facingMode: "user" }, audio: false,
      });
    } catch (e) {
      status.textContent = "The camera could not be opened (" + (e.name || "error") + "). Allow camera access, or upload a file.";
      return;
    }
    $("#preview").srcObject = rec.stream;
    status.textContent = "Camera ready. Ask the patient to face the camera, then start recording.";
    $("#rec-start").disabled = false;
    $("#rec-start").focus();
  }

  function countdown(n) {
    return new Promise((resolve) => {
      const out = $("#countdown");
      const step = () => {
        if (n === 0) { out.textContent = "Recording"; resolve(); return; }
        out.textContent = String(n);
        n -= 1;
        rec.countdownTimer = setTimeout(step, 1000);
      };
      step();
    });
  }

  async function startRecording() {
    if (!rec.stream) return;
    $("#rec-start").disabled = true;
    await countdown(3);
    if (!rec.stream) return; // closed during the countdown
    rec.chunks = [];
    try {
      rec.recorder = rec.type ? new MediaRecorder(rec.stream, { mimeType: rec.type }) : new MediaRecorder(rec.stream);
    } catch (e) {
      $("#rec-status").textContent = "Recording failed to start (" + (e.name || "error") + "). Upload a file instead.";
      return;
    }
    rec.recorder.addEventListener("dataavailable", (e) => { if (e.data && e.data.size) rec.chunks.push(e.data); });
    rec.recorder.addEventListener("stop", finishRecording);
    rec.recorder.start(250);
    rec.started = performance.now();
    rec.tick = setInterval(() => {
      const seconds = (performance.now() - rec.started) / 1000;
      $("#rec-time").textContent = fmtTime(seconds) + (MAX_SECONDS ? " of at most " + fmtTime(MAX_SECONDS) : "");
      if (MAX_SECONDS && seconds >= MAX_SECONDS) stopRecording();  // longer videos would be refused
    }, 250);
    $("#rec-status").textContent = "Recording " + titleOf(rec.expression) + ". Press Stop recording when the task is done.";
    $("#rec-stop").disabled = false;
    $("#rec-stop").focus();
  }

  function stopRecording() {
    if (rec.recorder && rec.recorder.state !== "inactive") rec.recorder.stop();
    $("#rec-stop").disabled = true;
  }

  function finishRecording() {
    clearInterval(rec.tick);
    const seconds = (performance.now() - rec.started) / 1000;
    const type = (rec.recorder.mimeType || rec.type || "video/webm").split(";")[0];
    const ext = type.includes("mp4") ? "mp4" : "webm";
    const blob = new Blob(rec.chunks, { type });
    const expression = rec.expression;
    const file = new File([blob], expression + "-recording." + ext, { type });
    $("#file-" + expression).value = "";
    if (acceptFile(expression, file, "Recorded " + fmtTime(seconds))) {
      $("#rec-status").textContent = "Recorded " + fmtTime(seconds) + " (" + type + "). You can record again or close the camera.";
    }
    $("#countdown").textContent = "";
    $("#rec-start").disabled = false;
  }

  function closeRecorder() {
    clearTimeout(rec.countdownTimer);
    clearInterval(rec.tick);
    if (rec.recorder && rec.recorder.state !== "inactive") {
      rec.recorder.removeEventListener("stop", finishRecording);
      rec.recorder.stop();
    }
    if (rec.stream) rec.stream.getTracks().forEach((t) => t.stop());
    const back = rec.expression ? $(`.record[data-expression="${rec.expression}"]`) : null;
    Object.assign(rec, { expression: null, stream: null, recorder: null, chunks: [] });
    const panel = $("#recorder");
    if (!panel.hidden) {
      panel.hidden = true;
      $("#preview").srcObject = null;
      if (back) back.focus();
    }
  }

  // ---------------------------------------------------------------- submitting
  function showFormError(message) {
    const node = $("#form-error");
    node.textContent = message || "";
    node.hidden = !message;
  }

  function problemField(problem, expressions) {
    // Map an upload error onto the expression it concerns: index (0-based order of the parts sent),
    // an expression name, or a field such as "video[1]" / "expression[1]".
    const candidates = [problem, problem.details].concat(problem.errors || problem.invalid_params || []);
    for (const c of candidates) {
      if (!c) continue;
      if (c.expression && expressions.includes(c.expression)) return c.expression;
      const idx = Number.isInteger(c.index) ? c.index : Number.isInteger(c.item) ? c.item : null;
      if (idx !== null && expressions[idx]) return expressions[idx];
      const field = String(c.field || c.name || c.pointer || (Array.isArray(c.loc) ? c.loc.join(".") : "") || "");
      const m = field.match(/(?:video|expression)\D*(\d+)/);
      if (m && expressions[Number(m[1])]) return expressions[Number(m[1])];
      if (/patient_ref/.test(field)) return "patient_ref";
    }
    return null;
  }

  function upload(path, data, key) {
    // XMLHttpRequest rather than fetch: only it reports upload progress, which large videos need.
    const box = $("#upload");
    const bar = $("#upload-bar");
    const status = $("#upload-status");
    const show = (pct) => {
      bar.setAttribute("aria-valuenow", String(pct));
      $(".fill", bar).style.width = pct + "%";
      status.textContent = pct < 100 ? "Uploading… " + pct + "%" : "Uploaded; checking the videos…";
    };
    box.hidden = false;
    show(0);
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", API + path);
      xhr.withCredentials = true;
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("Idempotency-Key", key);
      xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) show(Math.round((100 * e.loaded) / e.total)); });
      xhr.addEventListener("load", () => {
        box.hidden = true;
        let body = {};
        try { body = JSON.parse(xhr.responseText || "{}"); } catch (e) { body = {}; }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else reject(Object.assign({ status: xhr.status }, body, { code: body.code || "http_" + xhr.status }));
      });
      const fail = () => {
        box.hidden = true;
        reject({ status: 0, code: "network_error", detail: "The upload was interrupted. Check the connection and try again." });
      };
      xhr.addEventListener("error", fail);
      xhr.addEventListener("abort", fail);
      xhr.send(data);
    });
  }

  async function submit(event) {
    event.preventDefault();
    showFormError("");
    const expressions = activeTasks().map((t) => t.dataset.expression).filter((e) => chosen.has(e));
    for (const t of activeTasks()) if (!$("#error-" + t.dataset.expression).hidden && chosen.has(t.dataset.expression)) taskError(t.dataset.expression, "");
    if (!expressions.length) {
      showFormError("Choose or record a video for at least one task.");
      $("#file-" + activeTasks()[0].dataset.expression).focus();
      return;
    }
    const data = new FormData();
    for (const expr of expressions) {
      const file = chosen.get(expr);
      data.append("video", file, file.name);
      data.append("expression", expr);
    }
    const ref = $("#patient-ref").value.trim();
    if (ref) data.append("patient_ref", ref);
    data.append("protocol", activeProtocol());
    const button = $("#submit");
    button.disabled = true;
    button.textContent = "Uploading…";
    closeRecorder();
    try {
      const created = await upload("/v1/assessments", data, newKey());
      startProgress(created.id, expressions);
    } catch (p) {
      const where = problemField(p, expressions);
      if (where === "patient_ref") {
        setFieldError($("#patient-ref"), $("#patient-ref-error"), describe(p));
        $("#patient-ref").focus();
      } else if (where) {
        taskError(where, describe(p));
        $("#file-" + where).focus();
      } else {
        showFormError(describe(p));
      }
    } finally {
      button.disabled = false;
      button.textContent = "Submit for scoring";
    }
  }

  // ---------------------------------------------------------------- progress
  function progressRow(expression, index) {
    const id = "bar-" + index;
    const bar = el("div", {
      className: "bar", role: "progressbar", id, "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-valuenow": "0", "aria-labelledby": id + "-label", "aria-valuetext": "Queued",
    }, el("span", { className: "fill" }));
    return el("li", { "data-index": String(index) },
      el("span", { id: id + "-label", className: "bar-label", text: titleOf(expression) }),
      bar, el("span", { className: "bar-stage", id: id + "-stage", text: "queued" }));
  }

  function startProgress(id, expressions) {
    history.replaceState(null, "", "#assessment=" + encodeURIComponent(id));
    $("#assess").hidden = true;
    $("#report").hidden = true;
    const list = $("#progress-list");
    list.replaceChildren(...expressions.map((e, i) => progressRow(e, i)));
    $("#progress").hidden = false;
    $("#status-line").textContent = "Uploaded. Waiting for a worker…";
    // The form (and the focused submit button) is hidden now: move focus to the progress heading.
    $("#progress-title").setAttribute("tabindex", "-1");
    $("#progress-title").focus();
    poll(id);
  }

  function updateProgress(job) {
    for (const item of job.items || []) {
      const row = $(`#progress-list li[data-index="${item.index}"]`);
      if (!row) {
        $("#progress-list").append(progressRow(item.expression, item.index));
        continue;
      }
      const p = item.progress || {};
      let pct = Math.round(Number(p.percent) || 0);
      if (item.status === "succeeded" || item.status === "failed") pct = 100;
      const bar = $(".bar", row);
      bar.setAttribute("aria-valuenow", String(pct));
      const stage = item.status === "running" ? (p.stage || "processing") : item.status;
      bar.setAttribute("aria-valuetext", stage + ", " + pct + "%");
      $(".fill", bar).style.width = pct + "%";
      $(".bar-stage", row).textContent = stage + " " + pct + "%";
      row.className = "st-" + item.status;
    }
    const items = job.items || [];
    const done = items.filter((i) => i.status === "succeeded" || i.status === "failed").length;
    const current = items.find((i) => i.status === "running");
    let line = "Assessment " + job.status + ": " + done + " of " + items.length + " tasks done.";
    if (current) line += " Now: " + titleOf(current.expression) + " – " + ((current.progress || {}).stage || "processing") + ".";
    const status = $("#status-line");
    if (status.textContent !== line) status.textContent = line;
  }

  async function poll(id) {
    clearTimeout(pollTimer);
    let job;
    try {
      job = await api("GET", "/v1/assessments/" + encodeURIComponent(id));
    } catch (p) {
      if (p.status === 0 || p.status === 429 || p.status >= 500) {
        $("#status-line").textContent = "Connection problem, retrying… (" + (p.code || p.status) + ")";
        pollTimer = setTimeout(() => poll(id), POLL_MS * 3);
        return;
      }
      $("#status-line").textContent = "Could not read the assessment: " + describe(p);
      $("#assess").hidden = false;
      return;
    }
    updateProgress(job);
    if (!TERMINAL.has(job.status)) {
      pollTimer = setTimeout(() => poll(id), POLL_MS);
      return;
    }
    if (reportFor !== job.id) {
      reportFor = job.id;
      picturePolls = 0;
      showReport(job);
    } else {
      refreshPictures(job);
    }
    // The worker publishes the score first and draws the pictures afterwards: keep asking for a while.
    if (picturesPending(job) && picturePolls++ < 120) pollTimer = setTimeout(() => poll(id), POLL_MS);
    else for (const p of $$(".pictures-pending")) p.textContent = NO_PICTURES_TEXT;
  }

  const NO_PICTURES_TEXT = "Pictures are not available for this video.";

  // item.pictures (API): "pending" (links may still come), "ready" (links set), "none" (none will come).
  function hasPictures(item) {
    const links = item.links || {};
    if (item.pictures) return item.pictures === "ready" && Boolean(links.overlay || links.trajectories);
    return Boolean(links.overlay && links.trajectories);
  }

  function picturesPending(job) {
    return (job.items || []).some((i) => i.status === "succeeded" &&
      (i.pictures ? i.pictures === "pending" : !hasPictures(i)));
  }

  function refreshPictures(job) {
    for (const item of job.items || []) {
      const card = $(`#results article[data-expression="${item.expression}"]`);
      if (!card || $(".pictures", card)) continue;
      const pending = $(".pictures-pending", card);
      if (item.pictures === "none") {
        if (pending) pending.textContent = NO_PICTURES_TEXT;
        continue;
      }
      if (!hasPictures(item)) continue;
      if (pending) pending.remove();
      card.append(pictures(item));
    }
  }

  // ---------------------------------------------------------------- results
  function modelFacts(model) {
    if (!model) return el("p", { className: "model", text: "Model: not reported." });
    const dl = el("dl", { className: "model facts" });
    const add = (k, v) => { if (v !== undefined && v !== null && v !== "") dl.append(el("dt", { text: k }), el("dd", { text: String(v) })); };
    add("Model", (model.name || "?") + " version " + (model.version || "?"));
    add("Trained on", trainedOnText(model));
    const td = model.training_data;
    if (td) add("Training data", typeof td === "string" ? td : td.description || td.summary || JSON.stringify(td));
    add("Clinical use", model.clinical_use ? "approved" : "no – not for clinical decisions");
    if (model.sha256) add("Checksum (SHA-256)", String(model.sha256).slice(0, 16) + "…");
    return dl;
  }

  function qualityBlock(quality, reasons) {
    const box = el("div", { className: "quality" });
    if (!quality && !(reasons && reasons.length)) return box;
    const ok = quality ? quality.scorable !== false : false;
    box.append(el("p", { className: ok ? "q-ok" : "q-bad", text: "Video quality: " + (ok ? "scorable" : "not scorable") }));
    const all = Array.from(new Set([].concat(reasons || [], (quality && quality.reasons) || [])));
    if (all.length) box.append(el("ul", { className: "reasons" }, ...all.map((r) => el("li", { text: String(r) }))));
    return box;
  }

  function scoreBlock(result) {
    if (result.abstained || result.score === null || result.score === undefined) {
      return el("p", { className: "score abstained" },
        el("strong", { text: "Not scored" }), " – the video is not good enough to give a score. Record it again.");
    }
    const rounded = Number.isInteger(result.score_rounded) ? result.score_rounded : Math.round(result.score);
    const meaning = result.meaning || MEANINGS[rounded] || "";
    return el("p", { className: "score" },
      el("span", { className: "score-value", text: String(rounded) }),
      el("span", { className: "score-scale", text: " / 4 " }),
      el("span", { className: "score-meaning", text: meaning }),
      el("span", { className: "score-raw", text: " (model output " + Number(result.score).toFixed(2) + ")" }));
  }

  function pictures(item) {
    const links = item.links || {};
    const fig = [];
    if (links.overlay) fig.push(el("figure", {}, el("img", { src: links.overlay, alt: "Face landmarks over a video frame for " + titleOf(item.expression), loading: "eager" }), el("figcaption", { text: "Landmarks on the face" })));
    if (links.trajectories) fig.push(el("figure", {}, el("img", { src: links.trajectories, alt: "Landmark movement over time for " + titleOf(item.expression), loading: "eager" }), el("figcaption", { text: "Movement over time" })));
    return fig.length ? el("div", { className: "pictures" }, ...fig) : null;
  }

  function itemCard(item) {
    const card = el("article", { className: "item st-" + item.status, "data-expression": item.expression, "aria-labelledby": "res-" + item.index });
    card.append(el("h3", { id: "res-" + item.index, text: titleOf(item.expression) }));
    const result = item.result;
    if (item.status === "succeeded" && result) {
      card.append(scoreBlock(result), qualityBlock(result.quality, result.reasons));
      const warn = notClinicalReason(result.model);
      if (warn) card.append(el("p", { className: "warning small", text: warn }));
      card.append(modelFacts(result.model));
      const pics = hasPictures(item) ? pictures(item) : null;
      card.append(pics || el("p", { className: "pictures-pending hint", role: "status",
        text: item.pictures === "none" ? NO_PICTURES_TEXT : "Drawing the pictures…" }));
    } else {
      const err = item.error || {};
      const verdict = QUALITY_CODES.has(err.code);
      card.append(el("p", { className: "score failed" }, el("strong", { text: verdict ? "Not scored" : "Failed" }),
        " – " + (err.message || "the video could not be processed") + (err.code ? " (" + err.code + ")" : "") +
        (verdict ? ". Record this task again." : "")));
      if (verdict) card.append(el("p", { className: "q-bad", text: "Video quality: not scorable" }));
      if (result && result.quality) card.append(qualityBlock(result.quality, result.reasons));
    }
    return card;
  }

  function showReport(job) {
    clearTimeout(pollTimer);
    $("#progress").hidden = true;
    const items = job.items || [];
    $("#r-patient").textContent = job.patient_ref || "–";
    const when = job.created_at || job.finished_at || job.updated_at;
    $("#r-date").textContent = (when ? new Date(when) : new Date()).toLocaleString();
    $("#r-id").textContent = job.id;
    $("#r-status").textContent = job.status.replace("_", " ");
    $("#results").replaceChildren(...items.map(itemCard));
    const reasons = Array.from(new Set(items.map((i) => notClinicalReason(i.result && i.result.model)).filter(Boolean)));
    $("#report-warning").textContent = reasons.join(" ");
    $("#report-warning").hidden = !reasons.length;
    $("#fhir-link").href = API + "/v1/assessments/" + encodeURIComponent(job.id) + "/fhir";
    $("#fhir-link").setAttribute("download", "feqa-" + job.id + "-fhir.json");
    // Failures also show next to their inputs, for a corrected re-submission; the videos that were
    // scored are let go, so that sending the form again only sends the tasks still to do.
    const failed = items.some((i) => i.status === "failed");
    for (const item of items) {
      if (failed && item.status === "succeeded" && chosen.has(item.expression)) {
        chosen.delete(item.expression);
        $("#file-" + item.expression).value = "";
        updateChosen(item.expression);
      }
      if (item.status === "failed" && $("#file-" + item.expression)) {
        const err = item.error || {};
        taskError(item.expression, (err.message || "Could not be processed") + " (" + (err.code || "failed") + ")");
      }
    }
    $("#report").hidden = false;
    $("#model-warning").hidden = true;  // the report carries its own warning
    // The form stays hidden after a clean run; with failures it comes back so they can be fixed and re-sent.
    $("#assess").hidden = !items.some((i) => i.status === "failed");
    $("#report-title").setAttribute("tabindex", "-1");
    $("#report-title").focus();
  }

  function newAssessment() {
    clearTimeout(pollTimer);
    reportFor = null;
    history.replaceState(null, "", location.pathname);
    $("#report").hidden = true;
    $("#assess").hidden = false;
    loadModels();
    for (const expr of Array.from(chosen.keys())) { chosen.delete(expr); updateChosen(expr); taskError(expr, ""); }
    for (const input of $$("input[type=file]")) input.value = "";
    $("#patient-ref").value = "";
    $("#patient-ref").focus();
  }

  // ---------------------------------------------------------------- start
  function init() {
    wireTasks();
    switchProtocol();
    $("#sign-in").addEventListener("submit", signIn);
    $("#sign-out").addEventListener("click", signOut);
    $("#assess").addEventListener("submit", submit);
    $("#rec-start").addEventListener("click", startRecording);
    $("#rec-stop").addEventListener("click", stopRecording);
    $("#rec-cancel").addEventListener("click", closeRecorder);
    $("#print").addEventListener("click", () => window.print());
    $("#new").addEventListener("click", newAssessment);
    $("#patient-ref").addEventListener("input", () => setFieldError($("#patient-ref"), $("#patient-ref-error"), ""));
    document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("#recorder").hidden) closeRecorder(); });
    refreshSession();
    const m = location.hash.match(/assessment=([^&]+)/);
    if (m) startProgress(decodeURIComponent(m[1]), []);
  }

  document.addEventListener("DOMContentLoaded", init);
})();
