/* evstate console: live updates, actions, the time-travel slider, charts, the login.
 *
 * No build step, no framework. Every page keeps one WebSocket to /console/live; the server
 * says when the store's revision moves and sends a stats sample every second. A page's
 * #live element says what to do then (data-live): "refresh" fetches the page again with
 * X-Evstate-Partial and swaps in its live part, "notify" shows a banner, "tick" refreshes
 * on every sample too, "none" (the past) does nothing. Changes (save, delete, replay,
 * drop) are sent over the same socket and answered there.
 */
(() => {
  "use strict";
  const $ = (selector, root = document) => root.querySelector(selector);
  const page = document.body.dataset.page;

  // ---- messages to the person ------------------------------------------------------------

  let toastTimer = null;
  function toast(text, kind) {
    const el = $("#toast");
    if (!el) return;
    el.textContent = text;
    el.className = "show " + (kind || "");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.className = ""; }, 4500);
  }

  // ---- the live socket -------------------------------------------------------------------

  let socket = null;
  let retryMs = 500;
  let nextId = 1;
  const pending = new Map();

  function setDot(on) {
    const dot = $("#live-dot");
    if (!dot) return;
    dot.classList.toggle("on", on);
    dot.title = on ? "live: this page follows the store" : "reconnecting…";
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/console/live");
    socket.onopen = () => { retryMs = 500; setDot(true); };
    socket.onclose = () => {
      setDot(false);
      for (const waiting of pending.values()) waiting.reject(new Error("the connection was lost"));
      pending.clear();
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    };
    socket.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (_) { return; }
      if (message.type === "hello" || message.type === "revision") {
        if (message.revision != null) onRevision(message.revision);
      }
      else if (message.type === "sample") onSample(message.sample);
      else if (message.type === "reply") onReply(message);
    };
  }

  function onReply(message) {
    const waiting = pending.get(message.id);
    if (!waiting) return;
    pending.delete(message.id);
    if (message.ok) waiting.resolve(message.result);
    else waiting.reject(Object.assign(new Error(message.error.message), { code: message.error.code }));
  }

  function send(action, fields) {
    return new Promise((resolve, reject) => {
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected to the server; try again in a moment"));
        return;
      }
      const id = nextId++;
      pending.set(id, { resolve, reject });
      socket.send(JSON.stringify(Object.assign({ type: "action", id, action }, fields)));
    });
  }

  // ---- the live part of the page ---------------------------------------------------------

  const live = $("#live");
  const mode = live ? live.dataset.live : "none";
  const intervalMs = live ? Number(live.dataset.interval || 1000) : 1000;
  let lastRefresh = 0;
  let inFlight = false;
  let wanted = false;
  let timer = null;

  function liveBody() { return live ? live.firstElementChild : null; }

  function onRevision(revision) {
    const head = $("#head-revision");
    if (head) head.textContent = "revision " + revision;
    const body = liveBody();
    if (body && body.dataset.revision === String(revision)) return; // already shows it
    if (mode === "refresh" || mode === "tick") scheduleRefresh();
    else if (mode === "notify") {
      $("#stale-revision").textContent = "now at revision " + revision;
      $("#stale").hidden = false;
    }
  }

  function onSample(sample) {
    charts.push(sample);
    if (mode === "tick") scheduleRefresh();
  }

  function scheduleRefresh() {
    wanted = true;
    if (inFlight || timer !== null) return;
    timer = setTimeout(refresh, Math.max(0, lastRefresh + intervalMs - Date.now()));
  }

  function busyEditing() {
    const active = document.activeElement;
    return live && active && live.contains(active) && active.matches("input, textarea, select");
  }

  async function refresh() {
    timer = null;
    if (!wanted) return;
    if (busyEditing()) { timer = setTimeout(refresh, intervalMs); return; }
    wanted = false;
    inFlight = true;
    lastRefresh = Date.now();
    try {
      const headers = { "X-Evstate-Partial": "1" };
      const body = liveBody();
      if (body && body.dataset.known) headers["X-Evstate-Known"] = body.dataset.known;
      const response = await fetch(location.href, { headers, credentials: "same-origin", cache: "no-store" });
      if (response.status === 200) {
        live.innerHTML = await response.text();
        startCountdowns();
      } else if (response.status === 401) {
        location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      }
    } catch (_) {
      // the server is restarting: the socket reconnects and asks again
    } finally {
      inFlight = false;
      if (wanted) scheduleRefresh();
    }
  }

  // ---- TTL countdowns --------------------------------------------------------------------

  function formatSeconds(ms) {
    let s = Math.max(0, Math.round(ms / 1000));
    const parts = [];
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (s >= size) { parts.push(Math.floor(s / size) + unit); s %= size; }
    }
    parts.push(s + "s");
    return parts.slice(0, 2).join(" ");
  }

  function startCountdowns() {
    const now = Date.now();
    for (const el of document.querySelectorAll(".countdown[data-ttl-ms]")) {
      el.dataset.deadline = String(now + Number(el.dataset.ttlMs));
    }
    tickCountdowns();
  }

  function tickCountdowns() {
    for (const el of document.querySelectorAll(".countdown[data-deadline]")) {
      const left = Number(el.dataset.deadline) - Date.now();
      el.textContent = left > 0 ? formatSeconds(left) : "now (expiring)";
    }
  }

  // ---- actions: buttons and forms with data-action ---------------------------------------

  const done = {
    save: () => "Saved.",
    delete: (r) => (r.deleted ? "Deleted." : "It was already absent (a deleted event was written)."),
    replay_parked: (r) => `Replayed: ${r.replayed} delivered.`,
    drop_parked: (r) => `Dropped ${r.dropped}.`,
  };

  async function act(action, fields, control) {
    control.disabled = true;
    try {
      const result = await send(action, fields);
      toast(done[action](result), "ok");
      return result;
    } catch (error) {
      toast(error.message, "error");
      return null;
    } finally {
      control.disabled = false;
    }
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    event.preventDefault();
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    const fields = {};
    for (const name of ["scope", "key", "name"]) {
      if (button.dataset[name] !== undefined) fields[name] = button.dataset[name];
    }
    if (button.dataset.revision) fields.revision = Number(button.dataset.revision);
    if (await act(button.dataset.action, fields, button)) scheduleRefresh();
  });

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-action]");
    if (!form) return;
    event.preventDefault();
    const value = form.elements.value.value;
    try { JSON.parse(value); } catch (error) { toast("The value is not valid JSON: " + error.message, "error"); return; }
    const fields = { scope: form.dataset.scope, value };
    const key = form.dataset.key !== undefined ? form.dataset.key : form.elements.key.value;
    fields.key = key;
    if (form.dataset.create) fields.create = true;
    else fields.expected = form.dataset.expected;
    const ttl = form.elements.ttl_ms ? form.elements.ttl_ms.value.trim() : "";
    if (ttl) fields.ttl_ms = Number(ttl);
    const result = await act("save", fields, form.querySelector("button[type=submit]"));
    if (!result) return;
    if (form.dataset.after === "key") {
      location.href = location.pathname.replace(/\/$/, "") + "/keys/" + encodeURIComponent(key);
    } else {
      form.dataset.expected = JSON.stringify(JSON.parse(value));
      scheduleRefresh();
    }
  });

  // ---- the key page's time-travel slider -------------------------------------------------

  function goToEvent(slider, index) {
    const revisions = JSON.parse(slider.dataset.revisions);
    const url = new URL(location.href);
    url.searchParams.delete("older");
    if (index >= revisions.length - 1 && slider.dataset.present) url.searchParams.delete("at");
    else url.searchParams.set("at", String(revisions[Math.max(0, index)]));
    location.href = url.toString();
  }

  document.addEventListener("input", (event) => {
    if (event.target.id !== "slider") return;
    const slider = event.target;
    const revisions = JSON.parse(slider.dataset.revisions);
    const index = Number(slider.value);
    $("#slider-label").textContent =
      `event ${index + 1} of ${revisions.length} · revision ${revisions[index]} (release to go there)`;
  });

  document.addEventListener("change", (event) => {
    if (event.target.id === "slider") goToEvent(event.target, Number(event.target.value));
  });

  document.addEventListener("click", (event) => {
    const step = event.target.closest("button[data-step]");
    const slider = $("#slider");
    if (!step || !slider) return;
    const index = Number(slider.value) + Number(step.dataset.step);
    if (index >= 0 && index <= Number(slider.max)) goToEvent(slider, index);
  });

  // ---- charts (the stats page) -----------------------------------------------------------

  const two = (n) => String(n).padStart(2, "0");
  const clockTime = (t) => {
    const d = new Date(t * 1000);
    return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  };

  const charts = {
    list: [],
    init() {
      const holder = $("#samples");
      if (!holder || !window.uPlot) return;
      const samples = JSON.parse(holder.dataset.samples || "[]");
      for (const el of holder.querySelectorAll(".chart")) {
        const field = el.dataset.series;
        const data = [samples.map((s) => s.t), samples.map((s) => s[field])];
        const unit = el.dataset.unit;
        const format = unit === "bytes" ? formatBytes : (v) => (v == null ? "" : v.toLocaleString());
        const options = {
          width: el.clientWidth || 480,
          height: 200,
          legend: { show: false },
          cursor: { drag: { x: false, y: false } },
          scales: {
            // At least the last minute, so that the first samples do not stretch over years.
            x: { time: true, range: (u, min, max) => [Math.min(min ?? max, max - 60), max] },
            y: { range: (u, min, max) => [0, Math.max(max * 1.1, 1)] },
          },
          series: [{}, { label: field, stroke: "#1d4ed8", width: 2, fill: "rgba(29, 78, 216, 0.08)" }],
          axes: [
            // One line of local clock time a tick (uPlot's default adds a date line whose
            // labels run together when the window starts just before a minute).
            { stroke: "#667085", grid: { stroke: "#eef0f3" }, space: 70, values: (u, ticks) => ticks.map(clockTime) },
            { stroke: "#667085", grid: { stroke: "#eef0f3" }, size: 70, values: (u, ticks) => ticks.map(format) },
          ],
        };
        const plot = new window.uPlot(options, data, el);
        el.dataset.points = String(data[0].length);
        this.list.push({ plot, data, field, el });
      }
      window.addEventListener("resize", () => {
        for (const c of this.list) c.plot.setSize({ width: c.el.clientWidth, height: 200 });
      });
    },
    push(sample) {
      for (const c of this.list) {
        c.data[0].push(sample.t);
        c.data[1].push(sample[c.field]);
        if (c.data[0].length > 3600) { c.data[0].shift(); c.data[1].shift(); }
        c.plot.setData(c.data);
        c.el.dataset.points = String(c.data[0].length);
      }
    },
  };

  function formatBytes(value) {
    if (value == null) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = value;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(v < 10 ? 1 : 0) : String(v)) + " " + units[i];
  }

  // ---- the login page --------------------------------------------------------------------

  function initLogin() {
    const form = $("#login-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = $("#token").value;
      const response = await fetch("/console/session", {
        headers: { Authorization: "Bearer " + token },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.status === 204) location.href = form.dataset.next || "/";
      else $("#login-error").hidden = false;
    });
  }

  // ---- start -----------------------------------------------------------------------------

  if (page === "login") {
    initLogin();
    return;
  }
  charts.init();
  startCountdowns();
  setInterval(tickCountdowns, 1000);
  connect();
})();
