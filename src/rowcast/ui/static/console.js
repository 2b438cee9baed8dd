// rowcast console: the Live page (Server-Sent Events). Everything else is plain HTML and htmx.
(function () {
  "use strict";
  const KEEP = 500; // rows kept on the page, and events held while paused

  function start() {
    const form = document.getElementById("live-filter");
    if (!form) return;
    const rows = document.getElementById("live-rows");
    const status = document.getElementById("live-status");
    const count = document.getElementById("live-count");
    const notice = document.getElementById("live-notice");
    const pause = document.getElementById("live-pause");
    let paused = false, held = [], lost = 0, seen = 0, source = null;

    function cell(tr, text, cls) {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      td.textContent = text;
      tr.appendChild(td);
      return td;
    }

    function show(ev) {
      const tr = document.createElement("tr");
      tr.className = "fresh" + (ev.action ? " " + ev.action : "");
      tr.dataset.position = ev.position;
      cell(tr, ev.position.toLocaleString("en"), "num");
      const name = cell(tr, "");
      const link = document.createElement("a");
      link.href = ev.href;
      link.textContent = ev.stream;
      name.appendChild(link);
      const small = document.createElement("small");
      small.textContent = " v" + ev.version;
      name.appendChild(small);
      const type = cell(tr, "");
      const span = document.createElement("span");
      span.className = "type";
      span.textContent = ev.type;
      type.appendChild(span);
      cell(tr, ev.time);
      const data = cell(tr, "", "data");
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = ev.summary || "data";
      details.appendChild(summary);
      const pre = document.createElement("pre");
      pre.className = "json";
      pre.textContent = ev.data;
      details.appendChild(pre);
      data.appendChild(details);
      rows.insertBefore(tr, rows.firstChild);
      while (rows.children.length > KEEP) rows.removeChild(rows.lastChild);
      seen += 1;
      count.textContent = seen.toLocaleString("en");
    }

    function say(text) {
      notice.textContent = text;
      notice.hidden = !text;
    }

    function connect() {
      if (source) source.close();
      const params = new URLSearchParams(new FormData(form));
      for (const [k, v] of [...params]) if (!v) params.delete(k);
      source = new EventSource(form.dataset.feed + "?" + params.toString());
      status.textContent = "connecting…";
      source.onopen = function () { status.textContent = paused ? "paused" : "live"; status.className = "status live"; };
      source.onerror = function () { status.textContent = "reconnecting…"; status.className = "status down"; };
      source.addEventListener("notice", function (e) { say(JSON.parse(e.data)); });
      source.onmessage = function (e) {
        const ev = JSON.parse(e.data);
        if (paused) {
          held.push(ev);
          if (held.length > KEEP) { held.shift(); lost += 1; }
          status.textContent = "paused, " + held.length + " waiting" + (lost ? ", " + lost + " dropped" : "");
        } else {
          show(ev);
        }
      };
    }

    form.addEventListener("submit", function (e) {
      e.preventDefault();
      const params = new URLSearchParams(new FormData(form));
      for (const [k, v] of [...params]) if (!v) params.delete(k);
      history.replaceState(null, "", form.action + (params.toString() ? "?" + params : ""));
      rows.textContent = "";
      seen = 0;
      count.textContent = "0";
      connect();
    });
    pause.addEventListener("click", function () {
      paused = !paused;
      pause.setAttribute("aria-pressed", String(paused));
      pause.textContent = paused ? "Resume" : "Pause";
      if (!paused) {
        held.forEach(show);
        if (lost) say(lost + " events were dropped while paused (only the last " + KEEP + " are held)");
        held = []; lost = 0;
        status.textContent = "live";
      } else {
        status.textContent = "paused";
      }
    });
    document.getElementById("live-clear").addEventListener("click", function () {
      rows.textContent = ""; seen = 0; count.textContent = "0"; say("");
    });
    window.addEventListener("pagehide", function () { if (source) source.close(); });
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
