// Problems from the server's check, shown twice: as markers and notes on the diagram's elements,
// and as a list (#studio-problems) whose items select and scroll to their element.

const MARKER = "studio-problem";

/**
 * Shows `problems` ([{line, element_id, message, text}]) on `modeler` and in `list`; replaces
 * whatever an earlier call showed. An element the diagram does not draw (a process inside a
 * pool, an id that no longer exists) is listed only.
 */
export function showProblems(modeler, list, problems, onSelect) {
  clearProblems(modeler, list);
  const canvas = modeler.get("canvas");
  const overlays = modeler.get("overlays");
  const byElement = new Map();
  for (const problem of problems) {
    const element = drawnElement(modeler, problem.element_id);
    if (element) {
      if (!byElement.has(element)) byElement.set(element, []);
      byElement.get(element).push(problem.message);
    }
    list.append(listItem(problem, element, onSelect));
  }
  for (const [element, messages] of byElement) {
    canvas.addMarker(element, MARKER);
    // Readable at any zoom: the note never shrinks below its own size.
    overlays.add(element, MARKER, { position: { bottom: -6, left: 0 }, scale: { min: 1 }, html: note(messages) });
  }
  list.hidden = problems.length === 0;
}

export function clearProblems(modeler, list) {
  const canvas = modeler.get("canvas");
  for (const element of modeler.get("elementRegistry").getAll()) {
    if (canvas.hasMarker(element, MARKER)) canvas.removeMarker(element, MARKER);
  }
  modeler.get("overlays").remove({ type: MARKER });
  list.replaceChildren();
  list.hidden = true;
}

/** The shape or connection drawn for a BPMN id; for a process, the pool that shows it. */
export function drawnElement(modeler, id) {
  if (!id) return null;
  const registry = modeler.get("elementRegistry");
  const element = registry.get(id);
  if (element && !element.hidden) return element;
  return registry.find((el) => el.businessObject?.processRef?.id === id) || null;
}

function listItem(problem, element, onSelect) {
  const item = document.createElement("li");
  const text = problem.text || `${problem.line}: ${problem.element_id || "-"}: ${problem.message}`;
  if (element) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link";
    button.textContent = text;
    button.dataset.elementId = element.id;
    button.addEventListener("click", () => onSelect(element));
    item.append(button);
  } else {
    item.textContent = text;
  }
  return item;
}

function note(messages) {
  const box = document.createElement("div");
  box.className = "studio-problem-note";
  box.setAttribute("role", "note");
  box.textContent = messages.join(" · ");
  box.title = messages.join("\n");
  return box;
}
