// The monitoring overlay: the deployed diagram (bpmn-js NavigatedViewer, the global BpmnJS) with,
// on every task, how many tickets wait there and the median time spent; the task is shaded by
// its share of the waiting tickets and links to the list of them. The URLs come from the
// container's data attributes (the CSP forbids inline script); the table under the diagram
// carries the same numbers for people without JavaScript or a screen.
"use strict";

(() => {
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return `${minutes} min`;
    const hours = minutes / 60;
    if (hours < 48) return `${hours.toFixed(hours < 10 ? 1 : 0)} h`;
    return `${(hours / 24).toFixed(1)} d`;
  }

  async function fetchOk(url, accept) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: accept } });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText} for ${url}`);
    return response;
  }

  function badge(load) {
    const link = document.createElement("a");
    link.className = "monitor-badge";
    link.href = load.url;
    link.textContent = `${load.waiting.toLocaleString()} waiting · ${duration(load.median_spent_seconds)}`;
    link.title = `${load.name}: ${load.waiting} waiting now (median so far ${duration(load.median_waiting_seconds)}); median time spent ${duration(load.median_spent_seconds)}. Click to list them.`;
    return link;
  }

  async function draw(container) {
    if (typeof window.BpmnJS !== "function") {
      container.textContent = "The diagram viewer is not installed (npm ci --prefix web); the table below has the numbers.";
      return;
    }
    const viewer = new window.BpmnJS({ container });
    const [xml, data] = await Promise.all([
      fetchOk(container.dataset.xmlUrl, "application/xml").then((r) => r.text()),
      fetchOk(container.dataset.monitorUrl, "application/json").then((r) => r.json()),
    ]);
    await viewer.importXML(xml);
    viewer.get("canvas").zoom("fit-viewport");
    const registry = viewer.get("elementRegistry");
    const overlays = viewer.get("overlays");
    const most = Math.max(1, ...data.elements.map((e) => e.waiting));
    for (const load of data.elements) {
      const element = registry.get(load.element_id);
      if (!element) continue; // a task only older versions have: listed in the table
      const heat = Math.ceil((load.waiting / most) * 4); // 0..4
      viewer.get("canvas").addMarker(load.element_id, `heat-${heat}`);
      overlays.add(load.element_id, { position: { bottom: -6, left: 0 }, html: badge(load) });
      const gfx = registry.getGraphics(load.element_id);
      gfx.style.cursor = "pointer";
      gfx.addEventListener("click", () => { window.location.href = load.url; });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const container = document.getElementById("monitor-diagram");
    if (!container) return;
    draw(container).catch((error) => {
      container.textContent = `The diagram could not be drawn (${error.message}); the table below has the numbers.`;
    });
  });
})();
