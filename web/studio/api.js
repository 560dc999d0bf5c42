// The studio's few requests: JSON in, JSON out, same origin, the session's CSRF token in a header.

/**
 * POST `body` as JSON to `url`. Resolves to {status, data}; data is null when the answer is
 * not JSON (a proxy's error page, an empty 204). Rejects only when the network fails.
 */
export async function postJson(url, body, csrf) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
    body: JSON.stringify(body),
  });
  return { status: response.status, data: await jsonOrNull(response) };
}

/** The text at `url` (the diagram's XML); throws with the status when it is not there. */
export async function getText(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/xml" } });
  if (!response.ok) throw new Error(`${response.status} ${response.statusText} for ${url}`);
  return response.text();
}

/** What went wrong with an answer, in words: the server's `error` when it gave one. */
export function failure(status, data) {
  if (data && typeof data.error === "string" && data.error) return data.error;
  if (status === 403) return "you are not allowed to do this (403)";
  if (status === 413) return "the diagram is too large to send (413)";
  if (status === 400) return "the server refused the request (400); reload the page if your session ended";
  return `the server answered ${status}`;
}

async function jsonOrNull(response) {
  const type = response.headers.get("Content-Type") || "";
  if (!type.includes("json")) return null;
  try {
    return await response.json();
  } catch {
    return null;
  }
}
