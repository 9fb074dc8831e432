// The REST API client: JSON in and out, the total of lists, and errors that name their field.

const BASE = new URL("../v1/", document.baseURI);

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || "";
  }
}

function url(path, params) {
  const u = new URL(path.replace(/^\//, ""), BASE);
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    u.searchParams.set(key, String(value));
  }
  return u;
}

/** Call the API. Resolves {data, total, response}; rejects with ApiError (or a network
 * TypeError, wrapped in an ApiError with status 0). */
export async function call(method, path, { params, body, signal } = {}) {
  const init = { method, headers: { Accept: "application/json" }, signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url(path, params), init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `the server cannot be reached (${err.message})`, "");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const field = response.headers.get("X-Trickle-Error-Field") || (data && data.field) || "";
    const message =
      (data && typeof data === "object" && (data.message || data.error)) ||
      (typeof data === "string" && data) ||
      `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message, field);
  }
  const total = response.headers.get("X-Total-Count");
  return {
    data,
    total: total === null ? null : Number(total),
    node: response.headers.get("X-Whom"),
    response,
  };
}

export const get = (path, params, signal) => call("GET", path, { params, signal });
export const post = (path, body, params) => call("POST", path, { body, params });
export const put = (path, body) => call("PUT", path, { body });
export const del = (path) => call("DELETE", path);

export const jobPath = (name) => `jobs/${encodeURIComponent(name)}`;

/** The number of jobs matching the filters (an empty page with its total). */
export async function countJobs(params = {}) {
  const { total } = await get("jobs", { ...params, _start: 0, _end: 0 });
  return total;
}
