// The ticket's process diagram: the version it is pinned to, with the steps it is at ("current")
// and those it has passed ("completed") marked. Loaded on the ticket page only, after
// /static/vendor/bpmn-viewer.js (bpmn-js's NavigatedViewer, the global BpmnJS). No inline
// script: the CSP forbids it, so the URLs come from the container's data attributes.
"use strict";

(() => {
  async function fetchOk(url, accept) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: accept } });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText} for ${url}`);
    return response;
  }

  function say(container, text) {
    const note = document.createElement("p");
    note.className = "hint";
    note.textContent = text;
    container.replaceChildren(note);
    container.classList.add("diagram-missing");
  }

  function mark(viewer, state) {
    const canvas = viewer.get("canvas");
    const registry = viewer.get("elementRegistry");
    const current = new Set(state.current || []);
    // Ids the diagram does not draw (engine-internal tasks) are skipped.
    for (const id of state.completed || []) {
      if (!current.has(id) && registry.get(id)) canvas.addMarker(id, "completed");
    }
    for (const id of current) {
      if (registry.get(id)) canvas.addMarker(id, "current");
    }
  }

  async function draw(container) {
    if (typeof window.BpmnJS !== "function") {
      say(container, "The diagram viewer is not installed (npm ci --prefix web); the open tasks and the audit trail show where the ticket stands.");
      return;
    }
    const viewer = new window.BpmnJS({ container });
    try {
      const [xml, state] = await Promise.all([
        fetchOk(container.dataset.diagramUrl, "application/xml").then((r) => r.text()),
        fetchOk(container.dataset.stateUrl, "application/json").then((r) => r.json()),
      ]);
      await viewer.importXML(xml);
      viewer.get("canvas").zoom("fit-viewport", "auto");
      mark(viewer, state);
    } catch (error) {
      viewer.destroy();
      say(container, `The diagram could not be drawn: ${error.message}`);
    }
  }

  function start() {
    document.querySelectorAll(".diagram[data-diagram-url][data-state-url]").forEach(draw);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
