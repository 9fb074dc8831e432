// The single-page app: hash routes, the header (node, live state, pause) and page lifecycle.

import * as api from "./api.js";
import { announce, fill, h } from "./dom.js";
import { subscribe } from "./feed.js";
import * as busy from "./pages/busy.js";
import * as dashboard from "./pages/dashboard.js";
import * as form from "./pages/form.js";
import * as job from "./pages/job.js";
import * as jobs from "./pages/jobs.js";
import * as members from "./pages/members.js";

// [pattern, page module, nav key]; the pattern's groups are the page's params.
const ROUTES = [
  [/^\/?$/, dashboard, "dashboard"],
  [/^\/jobs\/?$/, jobs, "jobs"],
  [/^\/new\/?$/, form, "jobs"],
  [/^\/jobs\/([^/]+)\/edit\/?$/, form, "jobs"],
  [/^\/jobs\/([^/]+)\/?$/, job, "jobs"],
  [/^\/busy\/?$/, busy, "busy"],
  [/^\/members\/?$/, members, "members"],
];

const main = document.getElementById("main");
let cleanup = null;
let renderId = 0;

/** The current hash as {path, query (URLSearchParams)}. */
export function currentRoute() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?");
  return { path, query: new URLSearchParams(search) };
}

/** Go to a hash route ("/jobs?q=x"); replace the history entry when `replace`. */
export function navigate(route, { replace = false } = {}) {
  const target = "#" + route;
  if (location.hash === target) return;
  if (replace) {
    history.replaceState(null, "", target);
    render();
  } else {
    location.hash = target;
  }
}

async function render() {
  const id = ++renderId;
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.error(err);
    }
    cleanup = null;
  }
  delete document.documentElement.dataset.ready;
  const { path, query } = currentRoute();
  let match = null;
  let page = null;
  let navKey = "";
  for (const [pattern, module, key] of ROUTES) {
    match = path.match(pattern);
    if (match) {
      page = module;
      navKey = key;
      break;
    }
  }
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === navKey) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main.replaceChildren();
  if (!page) {
    document.title = "Not found · trickle";
    fill(main, h("h1", { tabindex: "-1" }, "Page not found"), h("p", {}, h("a", { href: "#/" }, "Back to the dashboard")));
    return;
  }
  const params = match.slice(1).map((p) => decodeURIComponent(p));
  const ctx = {
    params,
    query,
    navigate,
    stillCurrent: () => id === renderId,
  };
  try {
    const result = await page.render(main, ctx);
    if (id !== renderId) {
      if (typeof result === "function") result();
      return;
    }
    cleanup = typeof result === "function" ? result : null;
  } catch (err) {
    if (id !== renderId) return;
    console.error(err);
    main.replaceChildren(
      h("h1", { tabindex: "-1" }, "Something went wrong"),
      h("p", { class: "error-text" }, err.message || String(err)),
      h("p", {}, h("button", { type: "button", class: "btn", onclick: () => render() }, "Try again")),
    );
  }
  // after a navigation (not the first load, where the skip link comes first), the focus
  // goes to the new page's heading, so a screen reader reads it and Tab continues there
  if (id === renderId && id > 1) {
    const heading = main.querySelector("h1");
    if (heading && document.activeElement === document.body) heading.focus({ preventScroll: true });
  }
}

// -- header: this node, live state, pause ----------------------------------------------

const liveEl = document.getElementById("live");
const pauseBtn = document.getElementById("pause");
const banner = document.getElementById("paused-banner");
const nodeEl = document.getElementById("node");

const LIVE_TEXT = { connecting: "connecting…", live: "live", offline: "offline, retrying" };

function showLive(value) {
  liveEl.className = `live live-${value}`;
  liveEl.textContent = LIVE_TEXT[value] || value;
  liveEl.title =
    value === "live" ? "Live updates from the server's feed" : "The live feed is not connected: pages may be out of date";
}

let paused = false;

function showPaused(value) {
  paused = Boolean(value);
  pauseBtn.disabled = false;
  pauseBtn.textContent = paused ? "Unpause" : "Pause";
  pauseBtn.setAttribute("aria-pressed", String(paused));
  pauseBtn.title = paused
    ? "Accept job submissions again"
    : "Refuse new jobs and edits (schedules keep running)";
  banner.hidden = !paused;
  document.dispatchEvent(new CustomEvent("trickle:paused", { detail: paused }));
}

/** Whether job submissions are paused, as last seen. */
export function isPaused() {
  return paused;
}

async function loadHeader() {
  try {
    const [{ data }, node] = await Promise.all([api.get("pause"), api.get("")]);
    showPaused(data.paused);
    nodeEl.textContent = node.data && node.data.agent ? node.data.agent.name : node.node || "";
  } catch (err) {
    announce(`Cannot read the server's state: ${err.message}`, "error");
  }
}

pauseBtn.addEventListener("click", async () => {
  pauseBtn.disabled = true;
  try {
    const { data } = await api.post(paused ? "unpause" : "pause");
    showPaused(data.paused);
    announce(data.paused ? "Job submissions paused." : "Job submissions accepted again.");
  } catch (err) {
    announce(`Pause failed: ${err.message}`, "error");
    pauseBtn.disabled = false;
  }
});

subscribe({
  kinds: ["paused", "unpaused", "leader_changed"],
  onState: showLive,
  onOpen: (_hello, reconnected) => reconnected && loadHeader(),
  onEvent: (frame) => {
    if (frame.type === "paused") showPaused(true);
    else if (frame.type === "unpaused") showPaused(false);
    else if (frame.type === "leader_changed") {
      document.dispatchEvent(new CustomEvent("trickle:leader", { detail: frame.leader }));
    }
  },
});

// the skip link moves the focus; following its href would change the route
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  const heading = main.querySelector("h1");
  (heading || main).focus();
});

loadHeader();
window.addEventListener("hashchange", render);
render();
