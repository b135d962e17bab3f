// chatlane console: the only script (CSP script-src 'self'). Progressive: without it the
// pages read fine, times show in UTC and the live answer is what it was at page load.
"use strict";

function localizeTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const d = new Date(el.getAttribute("datetime"));
    if (!isNaN(d)) {
      el.title = el.getAttribute("datetime");
      el.textContent = d.toLocaleString();
    }
  }
}

function followLive() {
  const section = document.getElementById("live-section");
  if (!section || !window.EventSource) return;
  const pre = document.getElementById("live");
  const state = document.getElementById("live-state");
  const source = new EventSource(section.dataset.live);
  const read = (e) => JSON.parse(e.data);
  source.addEventListener("snapshot", (e) => { pre.textContent = read(e); state.textContent = "An answer is being produced."; });
  source.addEventListener("start", () => { pre.textContent = ""; state.textContent = "An answer is being produced."; });
  source.addEventListener("delta", (e) => { pre.textContent += read(e); });
  const last = document.getElementById("live-last");
  source.addEventListener("end", () => {
    state.textContent = "The answer stopped streaming.";
    last.textContent = pre.textContent;  // stays readable when the next answer starts
    last.hidden = false;
  });
  source.addEventListener("outcome", (e) => { state.textContent = "The turn ended: " + read(e) + " (reload to see it in the transcript)."; });
  source.onerror = () => { state.textContent = "Live view disconnected; reconnecting."; };
}

document.addEventListener("DOMContentLoaded", () => {
  localizeTimes(document);
  followLive();
});
