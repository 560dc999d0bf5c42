// The process owner's BPMN editor (the studio): bpmn-js's Modeler with the properties panel for
// Camunda 7 attributes (form fields, timers, conditions, messages, documentation), and the
// toolbar's Check, Save draft, Deploy and Download. Bundled by esbuild (`npm run build` in web/)
// into web/dist/studio.js and studio.css, served as /static/vendor/studio.{js,css}.
//
// No inline script (the CSP forbids it): the configuration comes from #studio-editor's data
// attributes: xml-url, save-url, check-url, deploy-url, read-only ("1"/"0"), csrf,
// process-id, draft (id or empty), draft-revision (int or empty).
import Modeler from "bpmn-js/lib/Modeler";
import NavigatedViewer from "bpmn-js/lib/NavigatedViewer";
import {
  BpmnPropertiesPanelModule,
  BpmnPropertiesProviderModule,
  CamundaPlatformPropertiesProviderModule,
} from "bpmn-js-properties-panel";
import CamundaBehaviorsModule from "camunda-bpmn-js-behaviors/lib/camunda-platform";
import camundaModdle from "camunda-bpmn-moddle/resources/camunda.json";

import "bpmn-js/dist/assets/diagram-js.css";
import "bpmn-js/dist/assets/bpmn-js.css";
import "bpmn-js/dist/assets/bpmn-font/css/bpmn-embedded.css";
import "@bpmn-io/properties-panel/dist/assets/properties-panel.css";
import "./editor.css";

import { failure, getText, postJson } from "./api.js";
import { clearProblems, showProblems } from "./problems.js";

function config(container) {
  const data = container.dataset;
  const revision = Number.parseInt(data.draftRevision || "", 10);
  return {
    xmlUrl: data.xmlUrl,
    saveUrl: data.saveUrl || "",
    checkUrl: data.checkUrl || "",
    deployUrl: data.deployUrl || "",
    readOnly: data.readOnly === "1",
    csrf: data.csrf || "",
    processId: data.processId || "diagram",
    draft: data.draft || null,
    revision: Number.isNaN(revision) ? null : revision,
  };
}

function createModeler(container, cfg) {
  const properties = document.getElementById("studio-properties");
  if (cfg.readOnly || !properties) {
    return new NavigatedViewer({ container, moddleExtensions: { camunda: camundaModdle } });
  }
  return new Modeler({
    container,
    propertiesPanel: { parent: properties },
    additionalModules: [
      BpmnPropertiesPanelModule,
      BpmnPropertiesProviderModule,
      CamundaPlatformPropertiesProviderModule,
      CamundaBehaviorsModule,
    ],
    moddleExtensions: { camunda: camundaModdle },
  });
}

class Studio {
  constructor(container) {
    this.container = container;
    this.cfg = config(container);
    this.status = document.getElementById("studio-status");
    this.list = document.getElementById("studio-problems");
    this.dirty = false;
    this.busy = false;
    container.replaceChildren();
    this.modeler = createModeler(container, this.cfg);
    this.editable = this.modeler instanceof Modeler;
    if (!this.editable) this.hideEditing();
    if (!this.list) {
      this.list = document.createElement("ol");
      this.list.hidden = true;
    }
  }

  async open() {
    this.say("Loading the diagram…");
    try {
      const xml = await getText(this.cfg.xmlUrl);
      const { warnings } = await this.modeler.importXML(xml);
      this.fit();
      const note = warnings.length ? ` (${warnings.length} import warnings: see the browser console)` : "";
      for (const warning of warnings) console.warn(warning.message);
      this.say(`Diagram loaded${this.editable ? "" : ", read-only"}${note}.`);
    } catch (error) {
      this.say(`The diagram could not be opened: ${error.message}`, "bad");
      return;
    }
    if (this.editable) {
      this.modeler.on("commandStack.changed", () => this.setDirty(true));
    }
    this.wire();
  }

  /** The whole diagram in view, right of the palette (which would otherwise hide its left side). */
  fit() {
    const canvas = this.modeler.get("canvas");
    canvas.zoom("fit-viewport", "auto");
    const palette = this.container.querySelector(".djs-palette");
    const { inner } = canvas.viewbox();
    if (!palette || !inner.width || !inner.height) return;
    const box = this.container.getBoundingClientRect();
    const left = palette.getBoundingClientRect().right - box.left + 16;
    const scale = Math.min((box.width - left - 16) / inner.width, (box.height - 32) / inner.height, 1);
    if (scale <= 0) return;
    const [width, height] = [box.width / scale, box.height / scale];
    canvas.viewbox({ x: inner.x - left / scale, y: inner.y - (height - inner.height) / 2, width, height });
  }

  wire() {
    this.button("studio-check", () => this.check());
    this.button("studio-save", () => this.save(this.cfg.revision));
    this.button("studio-deploy", () => this.deploy());
    this.button("studio-download", () => this.download());
    const toggle = document.getElementById("studio-properties-toggle");
    if (toggle) toggle.addEventListener("click", () => this.toggleProperties(toggle));
    window.addEventListener("beforeunload", (event) => {
      if (!this.dirty) return;
      event.preventDefault();
      event.returnValue = ""; // older browsers need it to ask
    });
  }

  button(id, action) {
    const element = document.getElementById(id);
    if (!element) return;
    element.disabled = false;
    element.addEventListener("click", async () => {
      if (this.busy) return;
      this.setBusy(true);
      try {
        await action();
      } catch (error) {
        this.say(`Something went wrong: ${error.message}. Your changes are still here.`, "bad");
      } finally {
        this.setBusy(false);
      }
    });
  }

  async xml() {
    // A properties field commits on blur (typing is debounced): commit what is being typed.
    const active = document.activeElement;
    if (active instanceof HTMLElement && active.closest("#studio-properties")) active.blur();
    const { xml } = await this.modeler.saveXML({ format: true });
    return xml;
  }

  /** The server's check of the current XML: {ok, problems}, or null when it could not run. */
  async check({ quiet = false } = {}) {
    if (!this.cfg.checkUrl) return { ok: true, problems: [] };
    if (!quiet) this.say("Checking…");
    const body = { xml: await this.xml(), filename: `${this.cfg.processId}.bpmn` };
    const { status, data } = await postJson(this.cfg.checkUrl, body, this.cfg.csrf);
    if (status !== 200 || !data || !Array.isArray(data.problems)) {
      this.say(`The check did not run: ${failure(status, data)}.`, "bad");
      return null;
    }
    this.showProblems(data.problems);
    const count = data.problems.length;
    if (data.ok && count === 0) this.say("Check passed: no problems found.", "ok");
    else this.say(`Check found ${count} problem${count === 1 ? "" : "s"}: see the list below the diagram.`, "bad");
    return { ok: Boolean(data.ok) && count === 0, problems: data.problems };
  }

  async save(baseRevision) {
    this.say("Saving the draft…");
    const body = { xml: await this.xml(), base_revision: baseRevision };
    const { status, data } = await postJson(this.cfg.saveUrl, body, this.cfg.csrf);
    if (status === 201 && data) {
      this.cfg.draft = String(data.draft);
      this.cfg.revision = data.revision;
      this.container.dataset.draft = this.cfg.draft;
      this.container.dataset.draftRevision = String(data.revision);
      if (data.save_url) this.cfg.saveUrl = data.save_url;
      this.setDirty(false);
      if (data.url && data.url !== window.location.pathname) window.history.replaceState(null, "", data.url);
      const at = data.saved_at ? ` at ${new Date(data.saved_at).toLocaleTimeString()}` : "";
      this.say(`Draft ${data.draft} saved as revision ${data.revision}${at}.`, "ok");
    } else if (status === 409) {
      this.conflict(data);
    } else {
      this.say(`The draft was not saved: ${failure(status, data)}. Your changes are still here.`, "bad");
    }
  }

  /** Someone saved a newer revision: say so, keep this work, and let the owner decide. */
  conflict(data) {
    const latest = data && Number.isInteger(data.latest_revision) ? data.latest_revision : null;
    const reason = data && data.error ? data.error : "someone saved this draft after you opened it";
    this.say(`Not saved: ${reason}. Your changes are still here; Download keeps a copy of them.`, "bad");
    if (latest === null) return;
    const over = document.createElement("button");
    over.type = "button";
    over.className = "secondary";
    over.textContent = `Save mine over revision ${latest}`;
    over.addEventListener("click", async () => {
      over.remove();
      this.setBusy(true);
      try {
        await this.save(latest);
      } finally {
        this.setBusy(false);
      }
    });
    this.status.append(" ", over);
  }

  async deploy() {
    const checked = await this.check();
    if (!checked) return;
    if (!checked.ok) {
      this.say("Not deployed: fix the problems listed below the diagram first.", "bad");
      return;
    }
    const note = document.getElementById("studio-note");
    this.say("Deploying…");
    const body = { xml: await this.xml(), note: note ? note.value.trim() : "" };
    const { status, data } = await postJson(this.cfg.deployUrl, body, this.cfg.csrf);
    if (status === 201 && data) {
      this.setDirty(false);
      this.say(`Deployed as version ${data.version}. `, "ok");
      if (data.url) {
        const link = document.createElement("a");
        link.href = data.url;
        link.textContent = "Open the process";
        this.status.append(link);
        window.location.assign(data.url);
      }
    } else if (status === 422 && data && Array.isArray(data.problems)) {
      this.showProblems(data.problems);
      this.say(`Not deployed: the server found ${data.problems.length} problem(s), listed below the diagram.`, "bad");
    } else {
      this.say(`Not deployed: ${failure(status, data)}.`, "bad");
    }
  }

  async download() {
    const blob = new Blob([await this.xml()], { type: "application/xml" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `${this.cfg.processId}${this.cfg.draft ? `-draft-${this.cfg.draft}` : ""}.bpmn`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    this.say(`Downloaded ${link.download}.`);
  }

  showProblems(problems) {
    showProblems(this.modeler, this.list, problems, (element) => this.select(element));
  }

  select(element) {
    this.modeler.get("selection").select(element);
    this.modeler.get("canvas").scrollToElement(element, { top: 100, bottom: 100, left: 100, right: 100 });
    const name = element.businessObject?.name;
    this.say(`Selected ${name ? `“${name}” (${element.id})` : element.id}.`);
  }

  toggleProperties(toggle) {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    document.querySelector(".studio")?.classList.toggle("studio-properties-open", open);
  }

  hideEditing() {
    for (const id of ["studio-save", "studio-deploy", "studio-note", "studio-properties-toggle"]) {
      const element = document.getElementById(id);
      if (element) element.hidden = true;
    }
    document.querySelector(".studio")?.classList.add("studio-read-only");
  }

  setDirty(dirty) {
    this.dirty = dirty;
    document.querySelector(".studio")?.classList.toggle("studio-dirty", dirty);
  }

  setBusy(busy) {
    this.busy = busy;
    this.container.setAttribute("aria-busy", String(busy));
    for (const id of ["studio-check", "studio-save", "studio-deploy"]) {
      const element = document.getElementById(id);
      if (element) element.disabled = busy;
    }
  }

  say(text, kind = "") {
    if (!this.status) return;
    this.status.textContent = text;
    this.status.dataset.kind = kind;
  }
}

function start() {
  const container = document.getElementById("studio-editor");
  if (!container || !container.dataset.xmlUrl) return;
  new Studio(container).open();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
