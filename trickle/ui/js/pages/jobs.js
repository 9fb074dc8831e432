// Jobs: search, status and disabled filters, sortable columns, server-side pagination and
// bulk run, toggle and delete. The state lives in the URL (#/jobs?q=..&status=..&page=..).

import * as api from "../api.js";
import { announce, badge, debounce, fill, h, ready, scroller, setTitle, timeEl } from "../dom.js";
import { subscribe } from "../feed.js";

const PAGE_SIZES = [10, 25, 50, 100];
const DEFAULT_SIZE = 25;
const BULK_PARALLEL = 4;

// [label, sort key or null]
const COLUMNS = [
  ["Name", "name"],
  ["Schedule", "schedule"],
  ["Status", null],
  ["Successes", "success_count"],
  ["Errors", "error_count"],
  ["Last success", "last_success"],
  ["Last error", "last_error"],
  ["Next", "next"],
  ["Enabled", null],
];

function readState(query) {
  const size = Number(query.get("size"));
  return {
    q: query.get("q") || "",
    status: query.get("status") || "",
    disabled: query.get("disabled") || "",
    sort: query.get("sort") || "name",
    order: query.get("order") === "desc" ? "desc" : "asc",
    page: Math.max(1, Number(query.get("page")) || 1),
    size: PAGE_SIZES.includes(size) ? size : DEFAULT_SIZE,
  };
}

function stateQuery(state) {
  const q = new URLSearchParams();
  if (state.q) q.set("q", state.q);
  if (state.status) q.set("status", state.status);
  if (state.disabled) q.set("disabled", state.disabled);
  if (state.sort !== "name") q.set("sort", state.sort);
  if (state.order !== "asc") q.set("order", state.order);
  if (state.page !== 1) q.set("page", String(state.page));
  if (state.size !== DEFAULT_SIZE) q.set("size", String(state.size));
  const text = q.toString();
  return "/jobs" + (text ? "?" + text : "");
}

/** Run `fn` over `items` with at most `limit` at a time; resolves allSettled results. */
async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      try {
        results[i] = { status: "fulfilled", value: await fn(items[i]) };
      } catch (reason) {
        results[i] = { status: "rejected", reason };
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export async function render(main, ctx) {
  setTitle("Jobs");
  const state = readState(ctx.query);
  const selected = new Set();
  let rows = [];
  let total = 0;
  let loading = null;

  const search = h("input", {
    type: "search",
    id: "job-search",
    value: state.q,
    placeholder: "Name contains…",
    autocomplete: "off",
  });
  const status = h(
    "select",
    { id: "job-status" },
    [
      ["", "Any status"],
      ["success", "Succeeded last"],
      ["failed", "Failed last"],
      ["partially_failed", "Partially failed"],
      ["untriggered", "Not run yet"],
    ].map(([v, t]) => h("option", { value: v, selected: state.status === v }, t)),
  );
  const disabled = h(
    "select",
    { id: "job-disabled" },
    [
      ["", "Enabled and disabled"],
      ["false", "Enabled only"],
      ["true", "Disabled only"],
    ].map(([v, t]) => h("option", { value: v, selected: state.disabled === v }, t)),
  );
  const size = h(
    "select",
    { id: "job-size" },
    PAGE_SIZES.map((n) => h("option", { value: String(n), selected: state.size === n }, `${n} per page`)),
  );
  const runBtn = h("button", { type: "button", class: "btn", disabled: true }, "Run");
  const toggleBtn = h("button", { type: "button", class: "btn", disabled: true }, "Toggle");
  const deleteBtn = h("button", { type: "button", class: "btn btn-danger", disabled: true }, "Delete");
  const selCount = h("span", { class: "muted", "aria-live": "polite" }, "");
  const tableBox = h("div", { class: "table-box", id: "jobs-box" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const countText = h("p", { class: "muted", id: "job-count", "aria-live": "polite" });

  fill(
    main,
    h(
      "div",
      { class: "page-head" },
      h("h1", { tabindex: "-1" }, "Jobs"),
      h("a", { class: "btn btn-primary", href: "#/new" }, "New job"),
    ),
    h(
      "form",
      { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
      h("div", { class: "field" }, h("label", { for: "job-search" }, "Search"), search),
      h("div", { class: "field" }, h("label", { for: "job-status" }, "Status"), status),
      h("div", { class: "field" }, h("label", { for: "job-disabled" }, "Enabled"), disabled),
      h("div", { class: "field" }, h("label", { for: "job-size" }, "Page size"), size),
    ),
    h(
      "div",
      { class: "bulk", role: "toolbar", "aria-label": "Actions on the selected jobs" },
      h("span", { class: "bulk-label" }, "Selected:"),
      runBtn,
      toggleBtn,
      deleteBtn,
      selCount,
    ),
    countText,
    tableBox,
    pager,
  );

  function syncUrl() {
    history.replaceState(null, "", "#" + stateQuery(state));
  }

  function updateBulk() {
    const n = selected.size;
    for (const b of [runBtn, toggleBtn, deleteBtn]) b.disabled = n === 0;
    selCount.textContent = n ? `${n} job${n === 1 ? "" : "s"} selected` : "";
  }

  function headerCell([label, key]) {
    if (!key) return h("th", { scope: "col" }, label);
    const active = state.sort === key;
    const arrow = active ? (state.order === "asc" ? " ▲" : " ▼") : "";
    return h(
      "th",
      { scope: "col", "aria-sort": active ? (state.order === "asc" ? "ascending" : "descending") : "none" },
      h(
        "button",
        {
          type: "button",
          class: "sort",
          "data-sort": key,
          onclick: () => {
            if (state.sort === key) state.order = state.order === "asc" ? "desc" : "asc";
            else {
              state.sort = key;
              state.order = key === "name" || key === "schedule" ? "asc" : "desc";
            }
            state.page = 1;
            reload({ focusSort: key });
          },
        },
        label,
        h("span", { "aria-hidden": "true" }, arrow),
      ),
    );
  }

  function renderTable(focusSort) {
    // keep the keyboard focus on the same control across a live refresh
    const active = tableBox.contains(document.activeElement) ? document.activeElement.getAttribute("aria-label") : null;
    const all = h("input", {
      type: "checkbox",
      "aria-label": "Select every job on this page",
      checked: rows.length > 0 && rows.every((j) => selected.has(j.name)),
      indeterminate: selected.size > 0 && !rows.every((j) => selected.has(j.name)),
      onchange: (e) => {
        for (const j of rows) {
          if (e.target.checked) selected.add(j.name);
          else selected.delete(j.name);
        }
        renderTable();
        updateBulk();
      },
    });
    const body = rows.map((j) =>
      h(
        "tr",
        { "data-job": j.name, class: j.disabled ? "is-disabled" : "" },
        h(
          "td",
          { class: "check" },
          h("input", {
            type: "checkbox",
            "aria-label": `Select ${j.name}`,
            checked: selected.has(j.name),
            onchange: (e) => {
              if (e.target.checked) selected.add(j.name);
              else selected.delete(j.name);
              all.checked = rows.every((r) => selected.has(r.name));
              all.indeterminate = selected.size > 0 && !all.checked;
              updateBulk();
            },
          }),
        ),
        h(
          "th",
          { scope: "row", class: "name" },
          h("a", { href: "#/jobs/" + encodeURIComponent(j.name) }, j.name),
          j.displayname ? h("div", { class: "muted small" }, j.displayname) : "",
        ),
        h("td", {}, h("code", {}, j.schedule), j.timezone ? h("div", { class: "muted small" }, j.timezone) : ""),
        h("td", {}, badge(j.status)),
        h("td", { class: "num" }, String(j.success_count)),
        h("td", { class: "num" }, String(j.error_count)),
        h("td", {}, timeEl(j.last_success, "never")),
        h("td", {}, timeEl(j.last_error, "never")),
        h("td", {}, j.disabled ? h("span", { class: "muted" }, "—") : timeEl(j.next)),
        h("td", {}, j.disabled ? badge("disabled", "disabled") : badge("enabled", "enabled")),
        h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(j.name)}/edit`, "aria-label": `Edit ${j.name}` }, "Edit")),
      ),
    );
    const table = h(
      "table",
      { class: "data jobs", id: "jobs-table" },
      h(
        "thead",
        {},
        h("tr", {}, h("th", { scope: "col", class: "check" }, all), COLUMNS.map(headerCell), h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions"))),
      ),
      h("tbody", {}, body),
    );
    if (!rows.length) {
      fill(
        tableBox,
        h("p", { class: "empty" }, state.q || state.status || state.disabled ? "No job matches these filters." : "No jobs yet. ", state.q || state.status || state.disabled ? "" : h("a", { href: "#/new" }, "Create one")),
      );
    } else {
      fill(tableBox, scroller("Jobs", table));
    }
    if (focusSort) {
      const btn = tableBox.querySelector(`button[data-sort="${focusSort}"]`);
      if (btn) btn.focus();
    } else if (active) {
      const again = [...tableBox.querySelectorAll("[aria-label]")].find((el) => el.getAttribute("aria-label") === active);
      if (again) again.focus();
    }
  }

  function renderPager() {
    const pages = Math.max(1, Math.ceil(total / state.size));
    const go = (p) => () => {
      state.page = p;
      reload();
    };
    const first = (state.page - 1) * state.size + 1;
    const last = Math.min(total, state.page * state.size);
    countText.textContent = total ? `Jobs ${first}–${last} of ${total}` : "";
    fill(
      pager,
      h("button", { type: "button", class: "btn", disabled: state.page <= 1, onclick: go(1), "aria-label": "First page" }, "«"),
      h("button", { type: "button", class: "btn", disabled: state.page <= 1, onclick: go(state.page - 1), "aria-label": "Previous page" }, "‹ Previous"),
      h("span", { class: "pager-text" }, `Page ${state.page} of ${pages}`),
      h("button", { type: "button", class: "btn", disabled: state.page >= pages, onclick: go(state.page + 1), "aria-label": "Next page" }, "Next ›"),
      h("button", { type: "button", class: "btn", disabled: state.page >= pages, onclick: go(pages), "aria-label": "Last page" }, "»"),
    );
  }

  async function reload({ focusSort = null, keepSelection = false } = {}) {
    syncUrl();
    if (loading) loading.abort();
    const controller = new AbortController();
    loading = controller;
    tableBox.setAttribute("aria-busy", "true");
    const start = (state.page - 1) * state.size;
    const params = {
      q: state.q,
      status: state.status,
      disabled: state.disabled,
      _sort: state.sort,
      _order: state.order.toUpperCase(),
      _start: start,
      _end: start + state.size,
    };
    let result;
    try {
      result = await api.get("jobs", params, controller.signal);
    } catch (err) {
      if (err.name === "AbortError") return;
      loading = null;
      tableBox.removeAttribute("aria-busy");
      fill(tableBox, h("p", { class: "error-text" }, `Cannot list jobs: ${err.message}`));
      return;
    }
    if (loading !== controller) return;
    loading = null;
    tableBox.removeAttribute("aria-busy");
    total = result.total ?? result.data.length;
    if (result.data.length === 0 && state.page > 1 && total > 0) {
      state.page = Math.max(1, Math.ceil(total / state.size));
      return reload();
    }
    rows = result.data;
    if (keepSelection) {
      const names = new Set(rows.map((j) => j.name));
      for (const n of [...selected]) if (!names.has(n)) selected.delete(n);
    } else {
      selected.clear();
    }
    renderTable(focusSort);
    renderPager();
    updateBulk();
    tableBox.dataset.loaded = String(Date.now());
  }

  const onSearch = debounce(() => {
    state.q = search.value.trim();
    state.page = 1;
    reload();
  }, 250);
  search.addEventListener("input", onSearch);
  status.addEventListener("change", () => {
    state.status = status.value;
    state.page = 1;
    reload();
  });
  disabled.addEventListener("change", () => {
    state.disabled = disabled.value;
    state.page = 1;
    reload();
  });
  size.addEventListener("change", () => {
    state.size = Number(size.value);
    state.page = 1;
    reload();
  });

  async function bulk(verb, fn, pastTense) {
    const names = [...selected];
    if (!names.length) return;
    for (const b of [runBtn, toggleBtn, deleteBtn]) b.disabled = true;
    const results = await pool(names, BULK_PARALLEL, fn);
    const failed = results.map((r, i) => [names[i], r]).filter(([, r]) => r.status === "rejected");
    const okCount = names.length - failed.length;
    const parts = [`${pastTense} ${okCount} of ${names.length} job${names.length === 1 ? "" : "s"}.`];
    for (const [name, r] of failed.slice(0, 3)) parts.push(`${name}: ${r.reason.message}`);
    if (failed.length > 3) parts.push(`and ${failed.length - 3} more failed`);
    announce(parts.join(" "), failed.length ? "error" : "info");
    await reload({ keepSelection: verb !== "delete" });
  }

  runBtn.addEventListener("click", () => bulk("run", (n) => api.post(api.jobPath(n) + "/run"), "Started"));
  toggleBtn.addEventListener("click", () => bulk("toggle", (n) => api.post(api.jobPath(n) + "/toggle"), "Toggled"));
  deleteBtn.addEventListener("click", () => {
    const n = selected.size;
    const names = [...selected].slice(0, 5).join(", ") + (n > 5 ? ", …" : "");
    if (!window.confirm(`Delete ${n} job${n === 1 ? "" : "s"} (${names}) and their executions? This cannot be undone.`)) return;
    bulk("delete", (name) => api.del(api.jobPath(name)), "Deleted");
  });

  await reload();

  const refresh = debounce(() => reload({ keepSelection: true }), 1000);
  const feed = subscribe({
    kinds: ["job_created", "job_updated", "job_deleted", "job_toggled", "execution_finished"],
    onOpen: (_hello, reconnected) => reconnected && refresh(),
    onEvent: () => refresh(),
  });
  ready("jobs");
  return () => {
    feed.close();
    refresh.cancel();
    onSearch.cancel();
    if (loading) loading.abort();
  };
}
