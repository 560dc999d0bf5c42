// Lanedesk workspace: small glue for htmx (no inline scripts: the CSP forbids them).
"use strict";

document.addEventListener("htmx:configRequest", (event) => {
  // Flask-WTF checks this header on htmx's POSTs, as it checks the form field on plain ones.
  const token = document.querySelector('meta[name="csrf-token"]');
  if (token) event.detail.headers["X-CSRFToken"] = token.content;
});

document.addEventListener("htmx:beforeRequest", (event) => {
  // Live regions (the inbox) refresh only while someone looks at them. (A trigger filter such
  // as [document.visibilityState ...] would need eval, which the CSP rightly forbids.)
  if (document.hidden && event.detail.elt.hasAttribute("data-live")) event.preventDefault();
});

document.addEventListener("htmx:beforeSwap", (event) => {
  // A form with field errors comes back as 422 and a conflict as 409: show them in place.
  const status = event.detail.xhr.status;
  if (status === 422 || status === 409) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

document.addEventListener("click", (event) => {
  // Canned responses: a button carrying data-insert puts its text into the reply box.
  const button = event.target.closest("[data-insert]");
  if (!button) return;
  const box = document.getElementById(button.dataset.target || "reply-body");
  if (!box) return;
  event.preventDefault(); // a link's fallback without JavaScript (a page with the text filled in)
  const text = button.dataset.insert;
  const at = box.selectionStart ?? box.value.length;
  box.value = box.value.slice(0, at) + text + box.value.slice(box.selectionEnd ?? at);
  box.focus();
});
