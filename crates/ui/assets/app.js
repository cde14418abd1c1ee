// The conflict inbox's script: live updates and the keyboard. The page works without it
// (every action is a plain form); with it, what a sync changes appears without a reload.
"use strict";

// Re-renders <main> from the server when a record shown here changed, unless the person is
// typing (then a notice says so, and a decision taken on old candidates is refused by the
// server with "this changed while you looked").
function refresh(changed) {
  const main = document.getElementById("main");
  const here = location.pathname.startsWith("/record/")
    ? decodeURIComponent(location.pathname.slice("/record/".length))
    : null;
  if (here !== null && !changed.includes(here)) return;
  const active = document.activeElement;
  const typing = active && active.name === "value" && active.value !== "";
  const live = document.getElementById("live");
  if (typing) {
    live.textContent = "This record changed; a decision on what you see now will be checked against it.";
    return;
  }
  const url = location.pathname + location.search.replace(/([?&])done=[^&]*&?/, "$1");
  fetch(url, { credentials: "same-origin" })
    .then((r) => r.text())
    .then((text) => {
      const doc = new DOMParser().parseFromString(text, "text/html");
      const fresh = doc.getElementById("main");
      if (fresh) {
        main.replaceChildren(...fresh.childNodes);
        live.textContent = "Updated by a sync.";
        document.body.dataset.updated = String(Date.now());
      }
    })
    .catch(() => {});
}

function connect() {
  const events = new EventSource("/events");
  events.addEventListener("changed", (e) => refresh(e.data.split(" ").filter(Boolean)));
  events.addEventListener("open", () => { document.body.dataset.live = "1"; });
}

// j/k: next/previous conflict; m, t, 1-9, e: the focused conflict's actions.
function keys(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
  const sections = Array.from(document.querySelectorAll("section.conflict"));
  if (sections.length === 0) return;
  let at = sections.findIndex((s) => s.contains(document.activeElement));
  if (e.key === "j" || e.key === "k") {
    at = e.key === "j" ? Math.min(at + 1, sections.length - 1) : Math.max(at - 1, 0);
    sections[at].focus();
    e.preventDefault();
    return;
  }
  if (at < 0) return;
  const button = sections[at].querySelector(`button[data-key="${e.key}"]`);
  if (!button) return;
  e.preventDefault();
  if (e.key === "e") {
    const input = sections[at].querySelector("[name=value]");
    if (input) { input.focus(); return; }
  }
  button.click();
}

document.addEventListener("keydown", keys);
if (window.EventSource) connect();
