/* FEQA web form. No framework, no build step: plain DOM code served by the API itself. */
"use strict";

(function () {
  const API = document.body.dataset.api || "";
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
    return $$(`.tasks[data-protocol="${activeProtocol()}"] .task:not(.unserved)`);
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

  // What the server serves, from GET /v1/models: per protocol, per task, served or not and why.
  let served = null;   // null: not known (not signed in, or the call failed): everything stays offered
  let modelReasons = [];

  function servedFrom(body) {
    const out = {};
    const servedSet = new Set(Array.isArray(body.expressions) ? body.expressions : []);
    const models = Array.isArray(body.models) ? body.models : [];
    for (const m of models) if (m && m.expression && m.served !== false) servedSet.add(m.expression);
    const general = body.problem ? String(body.problem) : "";
    const protocols = body.protocols && typeof body.protocols === "object" ? body.protocols : {};
    for (const [key, proto] of Object.entries(protocols)) {
      const tasks = Array.isArray(proto) ? proto : Array.isArray(proto && proto.tasks) ? proto.tasks
        : Array.isArray(proto && proto.expressions) ? proto.expressions : [];
      out[key] = {};
      for (const t of tasks) {
        const expr = typeof t === "string" ? t : t && (t.expression || t.name);
        if (!expr) continue;
        const on = typeof t === "object" && typeof t.served === "boolean" ? t.served : servedSet.has(expr);
        const why = typeof t === "object" ? t.reason_text || t.message || t.reason || "" : "";
        out[key][expr] = { served: on, reason: on ? "" : words(why) || general || "no model for this task is loaded on the server",
                           title: typeof t === "object" && t.title ? String(t.title) : "",
                           instructions: typeof t === "object" && t.instructions ? String(t.instructions) : "" };
      }
    }
    return out;
  }

  async function loadModels() {
    if (!Object.keys(MESSAGES).length) { messagesReady = null; ensureMessages(); }
    let models = [];
    try {
      const body = await api("GET", "/v1/models");
      models = Array.isArray(body) ? body : body.models || body.items || [];
      served = Array.isArray(body) ? null : servedFrom(body);
    } catch (e) {
      served = null;
      modelReasons = [];
      applyServed();
      updateBanners();
      return;
    }
    modelReasons = Array.from(new Set(models.map(notClinicalReason).filter(Boolean)));
    applyServed();
    updateBanners();
  }

  // One warning banner at a time: the report's own when a report is on screen, else the models'.
  function updateBanners() {
    const box = $("#model-warning");
    const reportShown = !$("#report").hidden;
    box.textContent = modelReasons.length ? modelReasons.join(" ") + " Scores are for demonstration and testing only." : "";
    box.hidden = reportShown || !modelReasons.length;
  }

  function isServed(protocol, expression) {
    if (!served || !served[protocol]) return true;
    const t = served[protocol][expression];
    return t ? t.served : false;
  }

  // The task's title and instructions as /v1/models gives them (model.tasks, the page's own source too).
  function applyTaskWords(task, expr, t) {
    const legend = $("legend", task);
    if (t.title && legend) {
      const n = legend.textContent.match(/^\d+\.\s*/);
      legend.textContent = (n ? n[0] : "") + t.title;
      const label = $(`label[for="file-${expr}"]`, task);
      if (label) label.textContent = "Video file for \u201c" + t.title + "\u201d";
    }
    const instr = $("#instr-" + expr);
    if (t.instructions && instr) instr.textContent = t.instructions;
  }

  // Grey out what the server does not serve, with the reason; a protocol with nothing served is disabled.
  function applyServed() {
    for (const block of $$(".tasks")) {
      const proto = block.dataset.protocol;
      let any = false;
      for (const task of $$(".task", block)) {
        const expr = task.dataset.expression;
        const on = isServed(proto, expr);
        any = any || on;
        task.classList.toggle("unserved", !on);
        task.toggleAttribute("aria-disabled", !on);
        if (!on) task.setAttribute("aria-disabled", "true");
        const note = $("#unserved-" + expr);
        const t = served && served[proto] && served[proto][expr];
        // a task the server's protocol does not list at all is not offered
        task.hidden = Boolean(served && served[proto] && !t);
        if (t) applyTaskWords(task, expr, t);
        note.textContent = on ? "" : "Not available: " + (t ? t.reason : "this server does not serve this task") + ".";
        note.hidden = on;
        if (!on && chosen.has(expr)) { chosen.delete(expr); updateChosen(expr); }
      }
      const radio = $(`input[name=protocol][value="${proto}"]`);
      const note = $("#served-" + proto);
      const known = served && served[proto];
      radio.disabled = Boolean(served) && !any;
      note.textContent = radio.disabled ? (known ? "– not available: no task of this protocol is served" : "– not available on this server") : "";
      note.hidden = !radio.disabled;
    }
    const checked = $("input[name=protocol]:checked");
    if (checked && checked.disabled) {
      const other = $$("input[name=protocol]").find((r) => !r.disabled);
      if (other) other.checked = true;
    }
    switchProtocol();
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
      for (const task of $$(".task", block)) {
        const usable = on && isServed(block.dataset.protocol, task.dataset.expression);
        // the recorder panel lives inside the task it records; its buttons follow the camera, not the task
        for (const ctl of $$("input, button", task)) if (!ctl.closest("#recorder")) ctl.disabled = !usable;
      }
    }
    // The open camera stays open while its task is still shown and served (a models refresh that lands
    // after the camera opened must not close it); otherwise it closes.
    if (!recorderTaskUsable()) closeRecorder();
  }

  function recorderTaskUsable() {
    if (!rec.expression) return false;
    const task = $("#task-" + rec.expression);
    const block = task && task.closest(".tasks");
    return Boolean(block && !block.hidden && !task.hidden && isServed(block.dataset.protocol, rec.expression));
  }

  // ---------------------------------------------------------------- webcam recording
  const rec = { expression: null, stream: null, recorder: null, chunks: [], started: 0, tick: null, type: "", ticket: 0 };

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
    const ticket = rec.ticket;   // closeRecorder moves the ticket on: a stale camera request sees it moved
    rec.expression = expression;
    $("#task-" + expression).append(panel);
    panel.hidden = false;
    $("#recorder-title").textContent = "Webcam recording – " + titleOf(expression);
    $("#rec-time").textContent = "00:00";
    $("#countdown").textContent = "";
    $("#rec-start").disabled = true;
    $("#rec-start").textContent = "Start recording";
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
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 }, facingMode: "user" }, audio: false,
      });
    } catch (e) {
      if (rec.ticket !== ticket) return;   // closed (or opened again) while asking
      status.textContent = "The camera could not be opened (" + (e.name || "error") + "). Allow camera access, or upload a file.";
      return;
    }
    if (rec.ticket !== ticket) {   // closed while the camera was starting: let the camera go
      stream.getTracks().forEach((t) => t.stop());
      return;
    }
    rec.stream = stream;
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
    // Disabling the focused Stop button would drop keyboard focus to the page: move it first.
    const hadFocus = document.activeElement === $("#rec-stop");
    if (rec.recorder && rec.recorder.state !== "inactive") rec.recorder.stop();
    if (hadFocus) $("#rec-status").focus();
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
    $("#rec-start").textContent = "Record again";
    if (document.activeElement === $("#rec-status") || document.activeElement === document.body) $("#rec-start").focus();
  }

  function closeRecorder() {
    rec.ticket += 1;
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
  // Each stage reports its own 0-100 %; the bar shows the item's progress over all stages, never going back.
  const STAGE_SPAN = { queued: [0, 0], decoding: [0, 15], tracking: [15, 85], scoring: [85, 97], done: [100, 100] };
  const shown = new Map();  // item index -> highest percent shown

  function overallPercent(item) {
    if (item.status === "succeeded" || item.status === "failed") return 100;
    const p = item.progress || {};
    const span = STAGE_SPAN[p.stage] || [0, 97];
    const within = Math.max(0, Math.min(100, Number(p.percent) || 0));
    return Math.round(span[0] + ((span[1] - span[0]) * within) / 100);
  }

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

  function showView(name) {
    // one of: form, progress, report, history (the form may also show below a report: see showReport)
    $("#assess").hidden = name !== "form";
    $("#progress").hidden = name !== "progress";
    $("#report").hidden = name !== "report";
    $("#history").hidden = name !== "history";
    if (name !== "history") $("#nav-new").setAttribute("aria-current", "page");
    else $("#nav-new").removeAttribute("aria-current");
    if (name === "history") $("#nav-history").setAttribute("aria-current", "page");
    else $("#nav-history").removeAttribute("aria-current");
    updateBanners();
  }

  function pageError(message) {
    const box = $("#page-error");
    box.textContent = message || "";
    box.hidden = !message;
    if (message) box.focus();
  }

  function startProgress(id, expressions) {
    history.replaceState(null, "", "#assessment=" + encodeURIComponent(id));
    pageError("");
    shown.clear();
    const list = $("#progress-list");
    list.replaceChildren(...expressions.map((e, i) => progressRow(e, i)));
    showView("progress");
    $("#status-line").textContent = "Uploaded. Waiting for a worker…";
    // The form (and the focused submit button) is hidden now: move focus to the progress heading.
    $("#progress-title").setAttribute("tabindex", "-1");
    $("#progress-title").focus();
    poll(id);
  }

  function updateProgress(job) {
    for (const item of job.items || []) {
      let row = $(`#progress-list li[data-index="${item.index}"]`);
      if (!row) {
        row = progressRow(item.expression, item.index);
        $("#progress-list").append(row);
      }
      const pct = Math.max(shown.get(item.index) || 0, overallPercent(item));
      shown.set(item.index, pct);
      const bar = $(".bar", row);
      bar.setAttribute("aria-valuenow", String(pct));
      const stage = item.status === "running" ? ((item.progress || {}).stage || "processing") : item.status;
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
      // A link to an assessment this key cannot read (another clinic's, deleted, expired): say so at the top.
      history.replaceState(null, "", location.pathname);
      showView("form");
      pageError("This assessment link cannot be opened: " + describe(p) +
        ". It may belong to another clinic's account, or it was deleted. Sign in with the right key, or start a new assessment.");
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
      await ensureMessages();     // reasons and findings in plain words
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
      const pics = pictures(item);
      if (pending) pending.replaceWith(pics);
      else $(".card-main", card).append(pics);
    }
  }

  // ---------------------------------------------------------------- scales, measures and charts
  function num(x) { return typeof x === "number" && Number.isFinite(x) ? x : null; }
  function fmt(x, digits) { return num(x) === null ? "–" : Number(x).toFixed(digits === undefined ? 2 : digits); }
  // Plain-language titles of the stable codes (GET /v1/messages); the code itself, in words, until they load.
  let MESSAGES = {};
  function words(code) {
    const m = MESSAGES[code];
    return m && m.title ? m.title : String(code || "").replace(/_/g, " ");
  }
  let messagesReady = null;
  async function loadMessages() {
    try { MESSAGES = (await api("GET", "/v1/messages")).messages || {}; } catch (e) { messagesReady = null; /* codes */ }
  }
  function ensureMessages() {
    if (!messagesReady) messagesReady = loadMessages();
    return messagesReady;
  }

  // The result's own scale (model.scales via the API): min, max and the words for each grade.
  function scaleOf(result) {
    const s = result && result.scale;
    if (!s || typeof s !== "object") return null;
    const meanings = s.meanings || {};
    return { title: s.title || s.name || "", min: num(s.min), max: num(s.max), meanings };
  }

  function meaningOf(result, rounded) {
    if (result.meaning) return result.meaning;
    const s = scaleOf(result);
    return s && s.meanings ? s.meanings[String(rounded)] || "" : "";
  }

  function repetitionsOf(result) {
    return Array.isArray(result && result.repetitions) ? result.repetitions.filter((r) => r && typeof r === "object") : [];
  }

  function regionsOf(result) {
    const m = result && result.measures;
    return m && typeof m.regions === "object" && m.regions ? m.regions : {};
  }

  // A repetition's amplitude: its own amplitude/range-of-motion measure, else the largest region's.
  function amplitudeOf(rep) {
    const m = rep.measures || {};
    for (const k of ["amplitude_iod", "rom_iod", "amplitude"]) if (num(m[k]) !== null) return m[k];
    const regions = m.regions && typeof m.regions === "object" ? Object.values(m.regions) : [];
    const roms = regions.map((r) => (r && num(r.rom_iod)) ?? null).filter((v) => v !== null);
    return roms.length ? Math.max(...roms) : null;
  }

  // Left and right per region: explicit left/right values, or left_X/right_X region pairs.
  function leftRightOf(result) {
    const regions = regionsOf(result);
    const out = [];
    for (const [name, r] of Object.entries(regions)) {
      if (!r || typeof r !== "object") continue;
      const l = num(r.left_rom_iod) ?? num(r.rom_left_iod) ?? num((r.left || {}).rom_iod) ?? num(r.left);
      const rr = num(r.right_rom_iod) ?? num(r.rom_right_iod) ?? num((r.right || {}).rom_iod) ?? num(r.right);
      if (l !== null && rr !== null) out.push({ name: words(name), left: l, right: rr, asym: num(r.asymmetry) });
    }
    if (out.length) return out;
    for (const [name, r] of Object.entries(regions)) {
      const m = name.match(/^left_(.+)$/);
      const other = m && regions["right_" + m[1]];
      if (other && num((r || {}).rom_iod) !== null && num(other.rom_iod) !== null) {
        out.push({ name: words(m[1]), left: r.rom_iod, right: other.rom_iod, asym: null });
      }
    }
    return out;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function svgText(x, y, text, attrs) { return svg("text", Object.assign({ x, y }, attrs || {}), text); }

  // A small bar chart: amplitude per repetition (IOD) on the left; on the right, left vs right range of motion
  // per region when the result gives both sides, else each region's left/right asymmetry index (0..1).
  function measuresChart(result, label) {
    const reps = repetitionsOf(result).map((r, i) => ({ i: (num(r.index) ?? i) + 1, a: amplitudeOf(r) }))
      .filter((r) => r.a !== null);
    const lr = leftRightOf(result);
    const asym = lr.length ? [] : Object.entries(regionsOf(result))
      .map(([n, r]) => ({ name: words(n), a: r && num(r.asymmetry) })).filter((r) => r.a !== null);
    const second = lr.length || asym.length;
    if (!reps.length && !second) return null;
    const W = 320, H = 96, top = 14, base = 76;
    const node = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
    const desc = [];
    const panel = (x0, w, title, bars, max, unit) => {
      node.append(svgText(x0, 10, title, { class: "chart-title" }));
      node.append(svg("line", { x1: x0, y1: base, x2: x0 + w, y2: base, class: "axis" }));
      const step = w / Math.max(1, bars.length);
      const every = Math.max(1, Math.ceil(bars.length / Math.max(1, Math.floor(w / 22))));   // labels that fit
      bars.forEach((b, k) => {
        const bw = Math.min(18, Math.max(1, (step - 2) / b.values.length));
        b.values.forEach((v, j) => {
          const h = max > 0 ? ((base - top) * Math.max(0, v)) / max : 0;
          const x = x0 + k * step + (step - bw * b.values.length) / 2 + j * bw;
          node.append(svg("rect", { x, y: base - h, width: Math.max(1, bw - 1), height: h, class: "bar-" + j }));
        });
        if (k % every === 0) node.append(svgText(x0 + k * step + step / 2, base + 9, b.label, { class: "tick", "text-anchor": "middle" }));
      });
      node.append(svgText(x0, H - 2, max > 0 ? "top of scale " + max.toFixed(2) + unit : "", { class: "tick" }));
    };
    const split = reps.length && second ? 128 : W - 8;
    if (reps.length) {
      const max = Math.max(...reps.map((r) => r.a));
      panel(4, split - 12, "Amplitude per rep.", reps.map((r) => ({ label: "#" + r.i, values: [r.a] })), max, " IOD");
      desc.push("amplitude per repetition: " + reps.map((r) => "#" + r.i + " " + r.a.toFixed(2)).join(", ") + " IOD");
    }
    const x0 = reps.length ? split + 4 : 4;
    const short = (n) => n.replace("mouth corners", "corners").replace("upper lip", "up lip").replace("lower lip", "low lip").slice(0, 8);
    if (lr.length) {
      const max = Math.max(...lr.map((r) => Math.max(r.left, r.right)));
      panel(x0, W - x0 - 4, "Left (blue), right (orange)", lr.map((r) => ({ label: short(r.name), values: [r.left, r.right] })), max, " IOD");
      desc.push("left vs right: " + lr.map((r) => r.name + " " + r.left.toFixed(2) + "/" + r.right.toFixed(2)).join(", "));
    } else if (asym.length) {
      panel(x0, W - x0 - 4, "Left/right asymmetry (0–1)", asym.map((r) => ({ label: short(r.name), values: [r.a] })), 1, "");
      desc.push("left/right asymmetry: " + asym.map((r) => r.name + " " + r.a.toFixed(2)).join(", "));
    }
    node.prepend(svg("title", {}, label + ": " + desc.join("; ")));
    return node;
  }

  function measuresBlock(result) {
    const reps = repetitionsOf(result);
    const box = el("div", { className: "measures" });
    const lines = [];
    if (reps.length || Array.isArray(result.repetitions)) {
      const amps = reps.map(amplitudeOf).filter((a) => a !== null);
      let t = reps.length + (reps.length === 1 ? " repetition" : " repetitions");
      const lo = amps.length ? Math.min(...amps).toFixed(2) : null, hi = amps.length ? Math.max(...amps).toFixed(2) : null;
      if (amps.length) t += ", amplitude " + (lo === hi ? lo : lo + "–" + hi) + " IOD";
      const scores = reps.map((r) => num(r.score)).filter((s) => s !== null);
      if (scores.length > 1) {
        t += "; scores per repetition " + scores.slice(0, 6).map((s) => s.toFixed(1)).join(", ") +
          (scores.length > 6 ? ", …" : "");
      }
      lines.push(t);
    }
    const m = result.measures || {};
    const lr = leftRightOf(result);
    const asym = Object.entries(regionsOf(result)).map(([n, r]) => [n, r && num(r.asymmetry)]).filter(([, a]) => a !== null);
    if (asym.length) {
      const [n, a] = asym.reduce((x, y) => (y[1] > x[1] ? y : x));
      lines.push("largest left/right asymmetry: " + words(n) + " " + a.toFixed(2) + " (0 symmetric, 1 one side only)");
    }
    if (num(m.fatigue) !== null) lines.push("fatigue " + fmt(m.fatigue) + ", variability " + fmt(m.variability));
    const rest = m.rest && typeof m.rest === "object" ? m.rest : null;
    if (rest && num(rest.blink_rate_per_min) !== null) lines.push("blinks " + fmt(rest.blink_rate_per_min, 1) + " per minute");
    const findings = Array.isArray(result.findings) ? result.findings : [];
    const found = findings.map((f) => words(f).replace(/[.\s]+$/, ""));
    if (!lines.length && !found.length && !lr.length) return null;
    if (lines.length) box.append(el("p", { className: "measure-line", text: "Movement: " + lines.join("; ") + "." }));
    if (found.length) box.append(el("p", { className: "findings", text: "Findings: " + found.join(". ") + "." }));
    const chart = measuresChart(result, "Movement measures for " + titleOf(result.expression));
    if (chart) box.append(chart);
    return box;
  }

  // ---------------------------------------------------------------- results
  function modelLine(model) {
    if (!model) return "Model: not reported";
    return (model.name || "?") + " " + (model.version || "?") + " · trained on " + trainedOnText(model);
  }

  function modelFacts(model) {
    const dl = el("dl", { className: "model facts" });
    const add = (k, v) => { if (v !== undefined && v !== null && v !== "") dl.append(el("dt", { text: k }), el("dd", { text: String(v) })); };
    add("Model", (model.name || "?") + " version " + (model.version || "?"));
    add("Trained on", trainedOnText(model));
    const td = model.training_data;
    if (td) add("Training data", typeof td === "string" ? td : td.description || td.summary || JSON.stringify(td));
    if (td && typeof td === "object" && td.n_train) add("Training clips", td.n_train + " (validation " + (td.n_val || 0) + ")");
    add("Clinical use", model.clinical_use ? "approved" : "no – not for clinical decisions");
    if (model.sha256) add("Checksum (SHA-256)", String(model.sha256));
    return dl;
  }

  function qualityBlock(quality, reasons) {
    const box = el("div", { className: "quality" });
    if (!quality && !(reasons && reasons.length)) return box;
    const ok = quality ? quality.scorable !== false : false;
    const all = Array.from(new Set([].concat(reasons || [], (quality && quality.reasons) || [])));
    box.append(el("p", { className: ok ? "q-ok" : "q-bad",
      text: "Video quality: " + (ok ? "scorable" : "not scorable") + (all.length ? " – " + all.map(words).join("; ") : "") }));
    return box;
  }

  function scoreBlock(result) {
    if (result.abstained || result.score === null || result.score === undefined) {
      return el("p", { className: "score abstained" },
        el("strong", { text: "Not scored" }), " – the video is not good enough to give a score. Record it again.");
    }
    const s = scaleOf(result);
    const rounded = Number.isInteger(result.score_rounded) ? result.score_rounded : Math.round(result.score);
    const range = s && s.min !== null && s.max !== null ? " on " + s.min + "–" + s.max + " " : " ";
    return el("p", { className: "score" },
      el("span", { className: "score-value", text: String(rounded) }),
      el("span", { className: "score-scale", text: range }),
      el("span", { className: "score-meaning", text: meaningOf(result, rounded) }),
      el("span", { className: "score-raw", text: " (model output " + Number(result.score).toFixed(2) + ")" }));
  }

  function scaleLine(result) {
    const s = scaleOf(result);
    if (!s) return null;
    const grades = Object.entries(s.meanings).map(([k, v]) => k + " " + v).join(", ");
    return el("p", { className: "scale-line hint", text: (s.title ? s.title + ": " : "") + grades });
  }

  // A thumbnail is a button: click, Enter or Space opens the picture large in a modal dialog.
  function pictureButton(src, alt, caption, kind) {
    const img = el("img", { src, alt, loading: "eager" });
    const btn = el("button", { type: "button", className: "thumb", "aria-haspopup": "dialog",
      "aria-label": "Enlarge: " + alt }, img);
    btn.addEventListener("click", () => openZoom(src, alt, btn));
    return el("figure", { className: "pic-" + kind }, btn, el("figcaption", { text: caption }));
  }

  function pictures(item) {
    const links = item.links || {};
    const title = titleOf(item.expression);
    const fig = [];
    if (links.overlay) fig.push(pictureButton(links.overlay, "The patient's face at rest and at the largest movement, with landmarks, for " + title, "At rest and at the largest movement", "overlay"));
    if (links.trajectories) fig.push(pictureButton(links.trajectories, "Movement of each face region over time, in inter-ocular distances, for " + title, "Movement over time (seconds)", "trajectories"));
    return fig.length ? el("div", { className: "pictures" }, ...fig) : null;
  }

  let zoomReturn = null;
  function openZoom(src, alt, from) {
    const dlg = $("#zoom");
    $("#zoom-img").src = src;
    $("#zoom-img").alt = alt;
    $("#zoom-title").textContent = alt;
    zoomReturn = from;
    if (typeof dlg.showModal === "function") dlg.showModal();
    else dlg.setAttribute("open", "");
    $("#zoom-close").focus();
  }

  function closeZoom() {
    const dlg = $("#zoom");
    if (dlg.open && typeof dlg.close === "function") dlg.close();
    else dlg.removeAttribute("open");
  }

  function itemCard(item) {
    const card = el("article", { className: "item st-" + item.status, "data-expression": item.expression, "aria-labelledby": "res-" + item.index });
    const main = el("div", { className: "card-text" });
    main.append(el("h3", { id: "res-" + item.index, text: titleOf(item.expression) }));
    const result = item.result;
    const body = el("div", { className: "card-main" }, main);
    card.append(body);
    if (item.status === "succeeded" && result) {
      main.append(scoreBlock(result));
      if (!result.abstained) { const sl = scaleLine(result); if (sl) main.append(sl); }
      main.append(qualityBlock(result.quality, result.reasons));
      if (!result.abstained) { const mb = measuresBlock(result); if (mb) main.append(mb); }
      const warn = notClinicalReason(result.model);
      if (warn) main.append(el("p", { className: "warning small", text: warn }));
      main.append(el("p", { className: "model-line hint", text: modelLine(result.model) }));
      const pics = hasPictures(item) ? pictures(item) : null;
      body.append(pics || el("p", { className: "pictures-pending hint", role: "status",
        text: item.pictures === "none" ? NO_PICTURES_TEXT : "Drawing the pictures…" }));
    } else {
      const err = item.error || {};
      const verdict = QUALITY_CODES.has(err.code);
      main.append(el("p", { className: "score failed" }, el("strong", { text: verdict ? "Not scored" : "Failed" }),
        " – " + (err.message || "the video could not be processed") + (err.code ? " (" + err.code + ")" : "") +
        (verdict ? ". Record this task again." : "")));
      if (verdict) main.append(el("p", { className: "q-bad", text: "Video quality: not scorable" }));
      if (result && result.quality) main.append(qualityBlock(result.quality, result.reasons));
    }
    return card;
  }

  // Model facts once per model, in a disclosure under the results (not printed).
  function modelDetails(items) {
    const seen = new Map();
    for (const it of items) {
      const m = it.result && it.result.model;
      if (m) seen.set((m.name || "") + " " + (m.version || ""), m);
    }
    const body = $("#model-details-body");
    body.replaceChildren(...Array.from(seen.values()).map(modelFacts));
    $("#model-details").hidden = !seen.size;
    return Array.from(seen.keys());
  }

  // Printed pages: patient, date, model and warning in the page margins of every page (CSS @page margin
  // boxes, set through the CSSOM: the page allows no inline styles).
  function cssString(s) { return '"' + String(s).replace(/[\\"]/g, "\\$&").replace(/[\r\n]+/g, " ") + '"'; }
  let pageRule = null;
  function setPrintMargins(top, bottom) {
    const sheet = Array.from(document.styleSheets).find((s) => (s.href || "").includes("app.css"));
    if (!sheet) return;
    try {
      if (pageRule !== null) { sheet.deleteRule(pageRule); pageRule = null; }
      const font = "font: 7.5pt system-ui, sans-serif;";
      const rule = "@page { @top-left { content: " + cssString(top) + "; " + font + " color: #333; } " +
        "@bottom-left { content: " + cssString(bottom) + "; " + font + " font-weight: bold; } " +
        '@bottom-right { content: "Page " counter(page) " of " counter(pages); ' + font + " } }";
      pageRule = sheet.insertRule(rule, sheet.cssRules.length);
    } catch (e) { pageRule = null; /* an older browser without page margin boxes: the report header says it */ }
  }

  function fmtDate(when, withTime) {
    const d = when ? new Date(when) : new Date();
    const opts = withTime ? { dateStyle: "medium", timeStyle: "short" } : { dateStyle: "medium" };
    try { return d.toLocaleString(undefined, opts); } catch (e) { return d.toISOString().slice(0, withTime ? 16 : 10); }
  }

  function visitDate(job) {
    return fmtDate(job.created_at || job.finished_at || job.updated_at, true);
  }

  // A task to do again: failed, or scored as "not scorable" (abstained).
  function needsRedo(item) {
    return item.status === "failed" || Boolean(item.status === "succeeded" && item.result && item.result.abstained);
  }

  function showReport(job) {
    clearTimeout(pollTimer);
    const items = job.items || [];
    $("#r-patient").textContent = job.patient_ref || "–";
    $("#r-date").textContent = visitDate(job);
    $("#r-id").textContent = job.id;
    $("#r-status").textContent = job.status.replace("_", " ");
    $("#results").replaceChildren(...items.map(itemCard));
    const models = modelDetails(items);
    $("#r-model").textContent = models.join(", ") || "–";
    const reasons = Array.from(new Set(items.map((i) => notClinicalReason(i.result && i.result.model)).filter(Boolean)));
    $("#report-warning").textContent = reasons.join(" ");
    $("#report-warning").hidden = !reasons.length;
    setPrintMargins("Patient " + (job.patient_ref || "–") + " · " + visitDate(job) + " · " + (models.join(", ") || "no model"),
      (reasons.length ? "NOT FOR CLINICAL USE. " + reasons.join(" ") : "") + " FEQA estimate, for review by a clinician.");
    $("#fhir-link").href = API + "/v1/assessments/" + encodeURIComponent(job.id) + "/fhir";
    $("#fhir-link").setAttribute("download", "feqa-" + job.id + "-fhir.json");
    $("#report-history").hidden = !job.patient_ref;
    $("#report-history").dataset.ref = job.patient_ref || "";
    // Failures also show next to their inputs, for a corrected re-submission; the videos that were
    // scored are let go, so that sending the form again only sends the tasks still to do. An abstained
    // task's video is let go too (the same video would not be scored again), with a note to record it again.
    const redo = items.filter(needsRedo);
    for (const item of items) {
      if (!$("#file-" + item.expression)) continue;
      const note = $("#redo-" + item.expression);
      note.hidden = true;
      if (redo.length && item.status === "succeeded" && chosen.has(item.expression)) {
        const name = chosen.get(item.expression).name;
        chosen.delete(item.expression);
        $("#file-" + item.expression).value = "";
        updateChosen(item.expression);
        if (item.result && item.result.abstained) {
          const why = (item.result.reasons || []).map(words).join("; ");
          note.textContent = "“" + name + "” was not scored" + (why ? " (" + why + ")" : "") +
            " and was removed from the form: record this task again.";
          note.hidden = false;
        }
      }
      if (item.status === "failed") {
        const err = item.error || {};
        taskError(item.expression, (err.message || "Could not be processed") + " (" + (err.code || "failed") + ")");
      }
    }
    showView("report");
    // With tasks to do again, the form comes back below the report (the report stays on top).
    if (redo.length) {
      $("#report").after($("#assess"));
      $("#assess-title").textContent = "Record again the tasks not scored";
      $("#assess").hidden = false;
    }
    $("#report-title").setAttribute("tabindex", "-1");
    $("#report-title").focus();
  }

  function resetFormPlace() {
    $("#progress").before($("#assess"));
    $("#assess-title").textContent = "New assessment";
  }

  function newAssessment() {
    clearTimeout(pollTimer);
    reportFor = null;
    history.replaceState(null, "", location.pathname);
    resetFormPlace();
    pageError("");
    showView("form");
    for (const expr of Array.from(chosen.keys())) { chosen.delete(expr); updateChosen(expr); taskError(expr, ""); }
    for (const input of $$("input[type=file]")) input.value = "";
    for (const n of $$(".redo-note")) n.hidden = true;
    $("#patient-ref").value = "";
    $("#patient-ref").focus();
  }

  // ---------------------------------------------------------------- patient history
  const MARKERS = ["circle", "square", "diamond", "triangle"];

  function marker(kind, x, y, cls) {
    if (kind === "square") return svg("rect", { x: x - 4, y: y - 4, width: 8, height: 8, class: cls });
    if (kind === "diamond") return svg("polygon", { points: `${x},${y - 5} ${x + 5},${y} ${x},${y + 5} ${x - 5},${y}`, class: cls });
    if (kind === "triangle") return svg("polygon", { points: `${x},${y - 5} ${x + 5},${y + 4} ${x - 5},${y + 4}`, class: cls });
    return svg("circle", { cx: x, cy: y, r: 4, class: cls });
  }

  function historyChart(task, visits, versions) {
    const scored = visits.filter((v) => num(v.score) !== null);
    const s = visits.map((v) => v.scale).find(Boolean) || {};
    const lo = num(s.min) ?? 0, hi = num(s.max) ?? Math.max(4, ...scored.map((v) => v.score));
    const W = 560, H = 170, L = 34, R = 10, T = 12, B = 34;
    const node = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "history-chart", role: "img",
      "aria-label": "Score for " + titleOf(task) + " across " + visits.length + " visits" });
    const times = visits.map((v) => new Date(v.date).getTime());
    const t0 = Math.min(...times), t1 = Math.max(...times);
    const xOf = (t) => (t1 > t0 ? L + ((W - L - R) * (t - t0)) / (t1 - t0) : (L + W - R) / 2);
    const yOf = (v) => T + ((H - T - B) * (hi - v)) / Math.max(1e-9, hi - lo);
    for (let g = Math.ceil(lo); g <= hi; g++) {
      node.append(svg("line", { x1: L, y1: yOf(g), x2: W - R, y2: yOf(g), class: "grid" }));
      node.append(svgText(L - 6, yOf(g) + 4, String(g), { class: "tick", "text-anchor": "end" }));
    }
    const pts = scored.map((v) => [xOf(new Date(v.date).getTime()), yOf(v.score)]);
    if (pts.length > 1) node.append(svg("polyline", { points: pts.map((p) => p.join(",")).join(" "), class: "line" }));
    scored.forEach((v, i) => {
      const kind = MARKERS[versions.indexOf(v.model_key) % MARKERS.length];
      const m = marker(kind, pts[i][0], pts[i][1], "pt v" + (versions.indexOf(v.model_key) % MARKERS.length));
      m.append(svg("title", {}, fmtDate(v.date) + ": " + v.score.toFixed(2) + " (" + v.model_key + ")"));
      node.append(m);
    });
    const sameDay = new Set(visits.map((v) => fmtDate(v.date))).size < visits.length;
    let lastX = -1e9;
    visits.forEach((v, i) => {
      const x = xOf(times[i]);
      if (x - lastX < 70) return;          // labels that would overlap are left out (the table has every date)
      lastX = x;
      const anchor = x < L + 40 ? "start" : x > W - R - 40 ? "end" : "middle";
      node.append(svgText(x, H - B + 16, sameDay ? fmtDate(v.date, true) : fmtDate(v.date), { class: "tick", "text-anchor": anchor }));
    });
    node.append(svgText(L, H - 4, "visit date", { class: "tick" }));
    return node;
  }

  function historyTable(task, visits, versions) {
    const head = el("tr", {}, ...["Date", "Score", "Meaning", "Repetitions", "Amplitude (IOD)", "Quality", "Model"]
      .map((h) => el("th", { scope: "col", text: h })));
    const rows = visits.map((v, i) => {
      const changed = i > 0 && v.model_key !== visits[i - 1].model_key;
      const model = el("td", {}, v.model_key || "–");
      if (changed) model.append(el("span", { className: "model-changed", text: " ◆ different model version" }));
      return el("tr", { className: changed ? "model-change" : null, "data-assessment": v.assessment_id },
        el("td", { text: fmtDate(v.date, true) }),
        el("td", { text: num(v.score) === null ? "not scored" : v.score.toFixed(2) }),
        el("td", { text: v.meaning || (v.abstained ? "not scorable" : v.status === "failed" ? "failed" : "–") }),
        el("td", { text: v.repetitions === null ? "–" : String(v.repetitions) }),
        el("td", { text: v.amplitude === null ? "–" : v.amplitude.toFixed(2) }),
        el("td", { text: v.quality }),
        model);
    });
    return el("table", { className: "history-table" }, el("caption", { text: titleOf(task) + ": every visit" }),
      el("thead", {}, head), el("tbody", {}, ...rows));
  }

  // The endpoint's assessments -> per task, one row per visit (oldest first).
  function visitsByTask(assessments) {
    const tasks = new Map();
    for (const a of assessments) {
      for (const it of a.items || []) {
        const r = it.result || {};
        const m = r.model || null;
        const reps = Array.isArray(r.repetitions) ? r.repetitions : null;
        const amps = (reps || []).map(amplitudeOf).filter((x) => x !== null);
        const v = {
          assessment_id: a.id, date: a.created_at, status: it.status, score: num(r.score), meaning: r.meaning || null,
          abstained: Boolean(r.abstained), scale: r.scale || null,
          model_key: m ? (m.name || "?") + " " + (m.version || "?") : "",
          repetitions: reps ? reps.length : null, amplitude: amps.length ? Math.max(...amps) : null,
          quality: it.status === "failed" ? "failed" : r.abstained ? "not scorable" : r.quality ? "scorable" : "–",
        };
        if (!tasks.has(it.expression)) tasks.set(it.expression, []);
        tasks.get(it.expression).push(v);
      }
    }
    for (const list of tasks.values()) list.sort((x, y) => new Date(x.date) - new Date(y.date));
    return tasks;
  }

  async function fetchHistory(ref) {
    const all = [];
    let path = "/v1/patients/" + encodeURIComponent(ref) + "/assessments?limit=100";
    for (let page = 0; page < 20 && path; page++) {
      const body = await api("GET", path);
      all.push(...(body.assessments || body.items || []));
      const next = body.next_cursor || (body.links && body.links.next) || null;
      path = next ? (String(next).startsWith("/") || String(next).startsWith("http")
        ? String(next).replace(/^https?:\/\/[^/]+/, "").replace(API, "")
        : "/v1/patients/" + encodeURIComponent(ref) + "/assessments?limit=100&cursor=" + encodeURIComponent(next)) : null;
    }
    return all;
  }

  async function showHistory(ref) {
    const input = $("#history-ref");
    const err = $("#history-error");
    ref = (ref || "").trim();
    setFieldError(input, err, "");
    if (!ref) { setFieldError(input, err, "Enter a patient reference."); input.focus(); return; }
    $("#history-status").textContent = "Loading the visits of " + ref + "…";
    $("#history-body").replaceChildren();
    $("#history-fhir").hidden = true;
    let assessments;
    try {
      assessments = await fetchHistory(ref);
    } catch (p) {
      $("#history-status").textContent = "";
      setFieldError(input, err, describe(p));
      input.focus();
      return;
    }
    const tasks = visitsByTask(assessments);
    $("#history-status").textContent = assessments.length
      ? assessments.length + (assessments.length === 1 ? " visit" : " visits") + " of " + ref + "."
      : "No assessment for " + ref + " (deleted or expired assessments are not shown).";
    const order = $$(".task").map((t) => t.dataset.expression);
    const sorted = Array.from(tasks.keys()).sort((a, b) => order.indexOf(a) - order.indexOf(b));
    const blocks = sorted.map((task) => {
      const visits = tasks.get(task);
      const versions = Array.from(new Set(visits.map((v) => v.model_key)));
      const sec = el("section", { className: "history-task", "data-expression": task, "aria-labelledby": "h-" + task },
        el("h3", { id: "h-" + task, text: titleOf(task) }));
      const s = visits.map((v) => v.scale).find(Boolean);
      if (s) sec.append(el("p", { className: "hint", text: s.title || "" }));
      sec.append(historyChart(task, visits, versions));
      if (versions.length > 1) {
        sec.append(el("p", { className: "model-note", text: "Scored by " + versions.length + " model versions (" +
          versions.map((v, i) => MARKERS[i % MARKERS.length] + ": " + (v || "none")).join("; ") +
          "): scores from different versions may not be comparable." }));
      }
      sec.append(historyTable(task, visits, versions));
      return sec;
    });
    $("#history-body").replaceChildren(...blocks);
    $("#history-fhir").href = API + "/v1/patients/" + encodeURIComponent(ref) + "/fhir";
    $("#history-fhir").setAttribute("download", "feqa-patient-history-fhir.json");
    $("#history-fhir").hidden = !assessments.length;
  }

  function openHistory(ref) {
    clearTimeout(pollTimer);
    resetFormPlace();
    pageError("");
    showView("history");
    history.replaceState(null, "", ref ? "#history=" + encodeURIComponent(ref) : "#history");
    if (ref) { $("#history-ref").value = ref; showHistory(ref); }
    $("#history-title").focus();
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
    $("#nav-new").addEventListener("click", newAssessment);
    $("#nav-history").addEventListener("click", () => openHistory($("#history-ref").value.trim()));
    $("#report-history").addEventListener("click", (e) => openHistory(e.currentTarget.dataset.ref));
    $("#history-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const ref = $("#history-ref").value.trim();
      history.replaceState(null, "", ref ? "#history=" + encodeURIComponent(ref) : "#history");
      showHistory(ref);
    });
    $("#zoom-close").addEventListener("click", closeZoom);
    $("#zoom").addEventListener("close", () => { if (zoomReturn) zoomReturn.focus(); zoomReturn = null; });
    $("#zoom").addEventListener("click", (e) => { if (e.target === e.currentTarget) closeZoom(); });
    $("#patient-ref").addEventListener("input", () => setFieldError($("#patient-ref"), $("#patient-ref-error"), ""));
    document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("#recorder").hidden) closeRecorder(); });
    refreshSession();
    const m = location.hash.match(/assessment=([^&]+)/);
    const h = location.hash.match(/history(?:=([^&]*))?/);
    if (m) startProgress(decodeURIComponent(m[1]), []);
    else if (h) openHistory(decodeURIComponent(h[1] || ""));
  }

  document.addEventListener("DOMContentLoaded", init);
})();
