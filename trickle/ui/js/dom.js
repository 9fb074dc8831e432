// DOM helpers. Every piece of text from the server goes through textContent or an
// attribute value, never through innerHTML: job output and names are shown as text.

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "value" && "value" in el) el.value = value;
    else if (key === "checked" || key === "selected" || key === "indeterminate") el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** h("a", {href: "#/"}, "text", child...): an HTML element; strings become text nodes. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  append(el, children);
  return el;
}

/** s("rect", {...}): an SVG element. */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, props);
  append(el, children);
  return el;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const ZERO_TIME = "0001-01-01T00:00:00Z";

/** A Date from the API's RFC 3339 text, or null for "no time" (null or Go's zero time). */
export function parseTime(text) {
  if (!text || text === ZERO_TIME || text.startsWith("0001-01-01")) return null;
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? null : d;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** "2024-03-01 13:30:15" in the browser's time zone. */
export function formatLocal(d) {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A <time> element for an API time, or a dash for none. */
export function timeEl(text, fallback = "—") {
  const d = parseTime(text);
  if (!d) return h("span", { class: "muted" }, fallback);
  return h("time", { datetime: d.toISOString(), title: `${text} (${relative(d)})` }, formatLocal(d));
}

/** "3 min ago" / "in 2 h". */
export function relative(d, now = new Date()) {
  const secs = Math.round((d.getTime() - now.getTime()) / 1000);
  const abs = Math.abs(secs);
  let text;
  if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.round(abs / 60)} min`;
  else if (abs < 86400) text = `${Math.round(abs / 3600)} h`;
  else text = `${Math.round(abs / 86400)} d`;
  return secs >= 0 ? `in ${text}` : `${text} ago`;
}

/** "1.2 s", "3 min 4 s" for a span of milliseconds. */
export function duration(ms) {
  if (ms < 0 || !Number.isFinite(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const secs = ms / 1000;
  if (secs < 60) return `${secs.toFixed(1)} s`;
  const mins = Math.floor(secs / 60);
  if (mins < 60) return `${mins} min ${Math.round(secs % 60)} s`;
  return `${Math.floor(mins / 60)} h ${mins % 60} min`;
}

/** A status badge: success, failed, partially_failed, running, missed, untriggered. */
export function badge(status, label) {
  const key = status || "untriggered";
  const text = label || (status ? status.replace("_", " ") : "not run yet");
  return h("span", { class: `badge badge-${key}` }, text);
}

/** Run fn at most once per `ms`, on the trailing edge. */
export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

/** Mark the page as rendered: html[data-ready=name] (tests wait for it) and a performance
 * mark "trickle-ready:<name>" (the benchmark reads its time). */
export function ready(name) {
  document.documentElement.dataset.ready = name;
  performance.mark(`trickle-ready:${name}`);
}

let liveRegion = null;

/** Say something to screen readers and show it in the status strip. */
export function announce(text, kind = "info") {
  liveRegion = liveRegion || document.getElementById("announce");
  if (!liveRegion) return;
  liveRegion.className = `announce announce-${kind}`;
  liveRegion.textContent = text;
  liveRegion.hidden = false;
  clearTimeout(announce.timer);
  announce.timer = setTimeout(() => {
    liveRegion.hidden = true;
  }, kind === "error" ? 10000 : 5000);
}

/** A horizontally scrollable, keyboard-focusable wrapper for a wide table. */
export function scroller(label, table) {
  return h("div", { class: "scroller", tabindex: "0", role: "region", "aria-label": label }, table);
}

/** JSON shown as text, indented. */
export function jsonBlock(value) {
  const empty = value && typeof value === "object" && Object.keys(value).length === 0;
  if (empty) return h("span", { class: "muted" }, "none");
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

/** The document title for a page. */
export function setTitle(text) {
  document.title = `${text} · trickle`;
}
