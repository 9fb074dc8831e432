// Job page: every field, run/toggle/edit/delete, the parent/child graph and the executions
// with their output, live for a running execution.

import * as api from "../api.js";
import { announce, badge, debounce, duration, fill, h, jsonBlock, parseTime, ready, s, scroller, setTitle, timeEl } from "../dom.js";
import { subscribe } from "../feed.js";
import { OutputStreams } from "../output.js";

const EXEC_PAGE = 20;
const LIST_OUTPUT_LIMIT = 4096; // bytes of output per execution in the list (the tail)
const HELLO_TIMEOUT_MS = 3000;
const GRAPH_MAX_NODES = 60;
const GRAPH_MAX_DEPTH = 4;

function field(label, value) {
  return [h("dt", {}, label), h("dd", {}, value === "" || value === null || value === undefined ? h("span", { class: "muted" }, "—") : value)];
}

function jobLink(name) {
  return h("a", { href: "#/jobs/" + encodeURIComponent(name) }, name);
}

const KNOWN_FIELDS = new Set([
  "id", "name", "displayname", "timezone", "schedule", "owner", "owner_email", "success_count",
  "error_count", "last_success", "last_error", "disabled", "tags", "metadata", "retries",
  "dependent_jobs", "parent_job", "processors", "concurrency", "executor", "executor_config",
  "status", "next", "ephemeral", "expires_at", "starts_at", "retry_interval", "catchup_window",
  "missed_count", "skipped_count", "last_skipped", "last_skip_reason", "created_at", "updated_at",
]);

function summary(job, fires) {
  const yes = (v) => (v ? "yes" : "no");
  const rest = Object.keys(job).filter((k) => !KNOWN_FIELDS.has(k));
  return h(
    "dl",
    { class: "fields" },
    field("Name", h("code", {}, job.name)),
    field("Display name", job.displayname),
    field("Schedule", h("code", {}, job.schedule)),
    field("Time zone", job.timezone || "UTC"),
    field("Next fires", fires),
    field("Status", badge(job.status)),
    field("Enabled", job.disabled ? badge("disabled", "disabled") : badge("enabled", "enabled")),
    field("Concurrency", job.concurrency || "allow"),
    field("Executor", h("code", {}, job.executor)),
    field("Executor config", jsonBlock(job.executor_config)),
    field("Retries", String(job.retries)),
    field("Retry interval", job.retry_interval),
    field("Catch-up window", job.catchup_window),
    field("Parent job", job.parent_job ? jobLink(job.parent_job) : ""),
    field("Dependent jobs", job.dependent_jobs && job.dependent_jobs.length ? job.dependent_jobs.flatMap((n, i) => [i ? ", " : "", jobLink(n)]) : ""),
    field("Owner", job.owner),
    field("Owner email", job.owner_email),
    field("Tags", jsonBlock(job.tags)),
    field("Metadata", jsonBlock(job.metadata)),
    field("Processors", jsonBlock(job.processors)),
    field("Ephemeral", yes(job.ephemeral)),
    field("Starts at", timeEl(job.starts_at, "any time")),
    field("Expires at", timeEl(job.expires_at, "never")),
    field("Successes", String(job.success_count)),
    field("Errors", String(job.error_count)),
    field("Last success", timeEl(job.last_success, "never")),
    field("Last error", timeEl(job.last_error, "never")),
    field("Missed fires", String(job.missed_count ?? 0)),
    field("Skipped fires", String(job.skipped_count ?? 0)),
    field("Last skipped", timeEl(job.last_skipped, "never")),
    field("Last skip reason", job.last_skip_reason || ""),
    field("Created", timeEl(job.created_at)),
    field("Updated", timeEl(job.updated_at)),
    rest.map((k) => field(k, typeof job[k] === "object" && job[k] !== null ? jsonBlock(job[k]) : String(job[k]))),
  );
}

async function nextFires(job) {
  if (job.disabled) return h("span", { class: "muted" }, "none: the job is disabled");
  try {
    const { data } = await api.get("schedule/next", { schedule: job.schedule, timezone: job.timezone, job: job.name });
    if (!data.next.length) return h("span", { class: "muted" }, "none");
    return h("ol", { class: "fires" }, data.next.map((t) => h("li", {}, timeEl(t))));
  } catch (err) {
    return h("span", { class: "muted" }, err.message);
  }
}

// -- the parent/child graph ------------------------------------------------------------

async function loadFamily(job) {
  const byName = new Map([[job.name, job]]);
  const fetchJob = async (name) => {
    if (byName.has(name)) return byName.get(name);
    try {
      const { data } = await api.get(api.jobPath(name));
      byName.set(name, data);
      return data;
    } catch {
      return null;
    }
  };
  // up: the chain of parents to the root
  let root = job;
  for (let i = 0; i < GRAPH_MAX_DEPTH && root.parent_job; i++) {
    const parent = await fetchJob(root.parent_job);
    if (!parent) break;
    root = parent;
  }
  // down from the root, breadth first, bounded
  const levels = [[root.name]];
  const edges = [];
  const seen = new Set([root.name]);
  for (let depth = 0; depth < GRAPH_MAX_DEPTH * 2 && seen.size < GRAPH_MAX_NODES; depth++) {
    const next = [];
    for (const name of levels[depth]) {
      const node = await fetchJob(name);
      for (const child of (node && node.dependent_jobs) || []) {
        if (seen.has(child) || seen.size >= GRAPH_MAX_NODES) continue;
        seen.add(child);
        next.push(child);
        edges.push([name, child]);
      }
    }
    if (!next.length) break;
    await Promise.all(next.map(fetchJob));
    levels.push(next);
  }
  return { levels, edges, byName };
}

function graph(job, family) {
  const { levels, edges, byName } = family;
  if (levels.length === 1) return h("p", { class: "muted" }, "This job has no parent job and no dependent jobs.");
  const BOX_W = 150;
  const BOX_H = 34;
  const GAP_X = 20;
  const GAP_Y = 46;
  const widest = Math.max(...levels.map((l) => l.length));
  const W = widest * (BOX_W + GAP_X) + GAP_X;
  const H = levels.length * (BOX_H + GAP_Y) - GAP_Y + 20;
  const pos = new Map();
  levels.forEach((level, depth) => {
    const offset = (W - level.length * (BOX_W + GAP_X) + GAP_X) / 2;
    level.forEach((name, i) => pos.set(name, { x: offset + i * (BOX_W + GAP_X), y: 10 + depth * (BOX_H + GAP_Y) }));
  });
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "graph", role: "group", "aria-label": `Parent and child jobs of ${job.name}` });
  svg.style.maxWidth = `${W}px`; // CSSOM, which the page's CSP allows (a style attribute it does not)
  for (const [from, to] of edges) {
    const a = pos.get(from);
    const b = pos.get(to);
    const x1 = a.x + BOX_W / 2;
    const y1 = a.y + BOX_H;
    const x2 = b.x + BOX_W / 2;
    const y2 = b.y;
    svg.append(s("path", { d: `M${x1},${y1} C${x1},${y1 + GAP_Y / 2} ${x2},${y2 - GAP_Y / 2} ${x2},${y2 - 4}`, class: "edge" }));
    svg.append(s("path", { d: `M${x2 - 4},${y2 - 8} L${x2},${y2 - 1} L${x2 + 4},${y2 - 8}`, class: "edge" }));
  }
  for (const [name, p] of pos) {
    const node = byName.get(name);
    const status = node ? node.status || "untriggered" : "untriggered";
    const label = name.length > 20 ? name.slice(0, 19) + "…" : name;
    svg.append(
      s(
        "a",
        { href: "#/jobs/" + encodeURIComponent(name), class: name === job.name ? "node current" : "node" },
        s("title", {}, `${name}${node && node.disabled ? " (disabled)" : ""}: ${status || "not run yet"}`),
        s("rect", { x: p.x, y: p.y, width: BOX_W, height: BOX_H, rx: 6, class: `st-${status}` }),
        s("text", { x: p.x + BOX_W / 2, y: p.y + BOX_H / 2 + 4, "text-anchor": "middle" }, label),
      ),
    );
  }
  // the same tree as nested lists, for screen readers and keyboards
  const children = new Map();
  for (const [from, to] of edges) children.set(from, [...(children.get(from) || []), to]);
  const tree = (name) =>
    h(
      "li",
      {},
      name === job.name ? h("strong", {}, name) : jobLink(name),
      children.has(name) ? h("ul", {}, children.get(name).map(tree)) : "",
    );
  return [scroller("Dependency graph", svg), h("details", {}, h("summary", {}, "The graph as a list"), h("ul", { class: "tree" }, tree(levels[0][0])))];
}

// -- executions ------------------------------------------------------------------------

function execDuration(e) {
  const start = parseTime(e.started_at);
  const end = parseTime(e.finished_at);
  if (!start) return "—";
  return duration((end || new Date()).getTime() - start.getTime());
}

function execStatus(e) {
  if (e.status) return e.status;
  if (!parseTime(e.finished_at)) return "running";
  return e.success ? "success" : "failed";
}

export async function render(main, ctx) {
  const name = ctx.params[0];
  setTitle(name);
  let job;
  try {
    job = (await api.get(api.jobPath(name))).data;
  } catch (err) {
    if (err.status === 404) {
      fill(main, h("h1", { tabindex: "-1" }, "No such job"), h("p", {}, `There is no job named “${name}”. `, h("a", { href: "#/jobs" }, "Back to the jobs")));
      ready("job-missing");
      return null;
    }
    throw err;
  }

  const outputs = new OutputStreams();
  const rowsById = new Map(); // execution id -> {row, detail, exec}
  let execTotal = 0;
  let execLoaded = 0;
  let firstHello;
  const helloSeen = new Promise((resolve) => {
    firstHello = resolve;
    setTimeout(resolve, HELLO_TIMEOUT_MS);
  });

  const heading = h("h1", { tabindex: "-1" }, job.displayname || job.name);
  const headBadges = h("span", { class: "head-badges" });
  const summaryBox = h("div", {});
  const graphBox = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const execBody = h("tbody", {});
  const execCount = h("p", { class: "muted", "aria-live": "polite" });
  const execBox = scroller(
    "Executions",
    h(
      "table",
      { class: "data execs", id: "exec-table" },
      h("thead", {}, h("tr", {}, ["Started", "Duration", "Node", "Trigger", "Attempt", "Status", "Exit code", "Output"].map((t) => h("th", { scope: "col" }, t)))),
      execBody,
    ),
  );
  const showCount = () => {
    execCount.textContent = execTotal ? `${execTotal} execution${execTotal === 1 ? "" : "s"}, newest first.` : "No executions yet.";
    execBox.hidden = execBody.children.length === 0;
  };
  const moreBtn = h("button", { type: "button", class: "btn", hidden: true }, "Show older executions");
  const runBtn = h("button", { type: "button", class: "btn btn-primary", id: "job-run" }, "Run now");
  const toggleBtn = h("button", { type: "button", class: "btn", id: "job-toggle" }, "");
  const editLink = h("a", { class: "btn", href: `#/jobs/${encodeURIComponent(name)}/edit`, id: "job-edit" }, "Edit");
  const deleteBtn = h("button", { type: "button", class: "btn btn-danger", id: "job-delete" }, "Delete");
  const clearBtn = h("button", { type: "button", class: "btn", id: "job-clear" }, "Clear executions");

  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", job.name),
    h("div", { class: "page-head" }, heading, headBadges),
    h("div", { class: "actions", role: "toolbar", "aria-label": "Job actions" }, runBtn, toggleBtn, editLink, deleteBtn, clearBtn),
    h(
      "section",
      { class: "panel", "aria-labelledby": "exec-h" },
      h("h2", { id: "exec-h" }, "Executions"),
      execCount,
      execBox,
      moreBtn,
    ),
    h("div", { class: "two-col" },
      h("section", { class: "panel", "aria-labelledby": "def-h" }, h("h2", { id: "def-h" }, "Definition"), summaryBox),
      h("section", { class: "panel", "aria-labelledby": "graph-h" }, h("h2", { id: "graph-h" }, "Parent and child jobs"), graphBox),
    ),
  );

  function showJob() {
    heading.textContent = job.displayname || job.name;
    fill(headBadges, badge(job.status), " ", job.disabled ? badge("disabled", "disabled") : badge("enabled", "enabled"));
    toggleBtn.textContent = job.disabled ? "Enable" : "Disable";
    runBtn.disabled = job.disabled;
    runBtn.title = job.disabled ? "A disabled job cannot run: enable it first" : "";
  }

  async function loadSummary() {
    const fires = await nextFires(job);
    fill(summaryBox, summary(job, fires));
  }

  async function loadGraph() {
    fill(graphBox, graph(job, await loadFamily(job)));
  }

  async function reloadJob() {
    try {
      job = (await api.get(api.jobPath(name))).data;
    } catch (err) {
      if (err.status === 404) {
        announce(`Job ${name} was deleted.`);
        ctx.navigate("/jobs", { replace: true });
      }
      return;
    }
    showJob();
    await loadSummary();
  }

  // -- executions rows --

  function cells(e) {
    const status = execStatus(e);
    return [
      h("td", {}, timeEl(e.started_at)),
      h("td", { class: "dur" }, execDuration(e)),
      h("td", {}, e.node_name || "—"),
      h("td", {}, e.trigger || "—"),
      h("td", { class: "num" }, String(e.attempt ?? "")),
      h("td", { class: "status" }, badge(status)),
      h("td", { class: "num" }, e.exit_code === null || e.exit_code === undefined || e.exit_code === "" ? "—" : String(e.exit_code)),
    ];
  }

  function makeRow(e, { open = false, atTop = false } = {}) {
    const pre = h("pre", { class: "output", tabindex: "0", "aria-label": `Output of execution ${e.id}` });
    const truncatedNote = h("p", { class: "muted small", hidden: true });
    const detailId = `out-${e.id}`;
    const detail = h("tr", { class: "exec-detail", id: detailId, hidden: !open, "data-execution": e.id }, h("td", { colspan: "8" }, truncatedNote, pre));
    const toggle = h("button", { type: "button", class: "btn btn-small", "aria-expanded": String(open), "aria-controls": detailId }, open ? "Hide" : "Show");
    toggle.addEventListener("click", () => {
      const opening = detail.hidden;
      detail.hidden = !opening;
      toggle.setAttribute("aria-expanded", String(opening));
      toggle.textContent = opening ? "Hide" : "Show";
    });
    const row = h("tr", { class: "exec", "data-execution": e.id, "data-status": execStatus(e) }, cells(e), h("td", {}, toggle));
    const item = { row, detail, exec: e, pre, truncatedNote, toggle };
    rowsById.set(e.id, item);
    if (atTop) execBody.prepend(row, detail);
    else execBody.append(row, detail);
    outputs.bind(e.id, pre);
    return item;
  }

  function updateRow(e) {
    const item = rowsById.get(e.id);
    if (!item) return makeRow(e, { open: true, atTop: true });
    item.exec = { ...item.exec, ...e };
    item.row.dataset.status = execStatus(item.exec);
    item.row.replaceChildren(...cells(item.exec), h("td", {}, item.toggle));
    return item;
  }

  function showTruncated(item, e) {
    if (!e.output_truncated) return;
    const load = h("button", { type: "button", class: "btn btn-small" }, "Load the full output");
    load.addEventListener("click", async () => {
      load.disabled = true;
      try {
        const { data } = await api.get(`${api.jobPath(name)}/executions/${encodeURIComponent(e.id)}`);
        outputs.finished(e.id, data.output || "");
        item.truncatedNote.hidden = true;
      } catch (err) {
        announce(`Cannot load the output: ${err.message}`, "error");
        load.disabled = false;
      }
    });
    fill(item.truncatedNote, `Showing the last ${LIST_OUTPUT_LIMIT} bytes. `, load);
    item.truncatedNote.hidden = false;
  }

  async function loadExecutions({ older = false } = {}) {
    const start = older ? execLoaded : 0;
    const { data, total } = await api.get(`${api.jobPath(name)}/executions`, {
      _start: start,
      _end: start + EXEC_PAGE,
      _sort: "started_at",
      _order: "DESC",
      output_size_limit: LIST_OUTPUT_LIMIT,
    });
    execTotal = total ?? data.length;
    if (!older) {
      execBody.replaceChildren();
      rowsById.clear();
      execLoaded = 0;
    }
    const running = [];
    for (const e of data) {
      if (rowsById.has(e.id)) continue;
      const isRunning = execStatus(e) === "running";
      if (isRunning) running.push(e.id);
      else outputs.finished(e.id, e.output || "");
      const item = makeRow(e, { open: isRunning });
      if (!isRunning) showTruncated(item, e);
    }
    execLoaded += data.length;
    if (running.length) await seedRunning(running);
    showCount();
    moreBtn.hidden = execLoaded >= execTotal;
  }

  async function seedRunning(ids) {
    let busy = [];
    try {
      busy = (await api.get("busy")).data || [];
    } catch {
      busy = [];
    }
    const byId = new Map(busy.map((b) => [b.id, b]));
    for (const id of ids) {
      outputs.seed(id, (byId.get(id) && byId.get(id).output) || "");
    }
  }

  moreBtn.addEventListener("click", () => loadExecutions({ older: true }).catch((err) => announce(err.message, "error")));

  // -- live --

  const refreshJob = debounce(() => reloadJob(), 400);
  const feed = subscribe({
    jobs: [name],
    kinds: ["execution_started", "execution_output", "execution_finished", "job_updated", "job_toggled", "job_deleted"],
    onOpen: (_hello, reconnected) => {
      firstHello();
      if (reconnected) {
        refreshJob();
        loadExecutions().catch(() => {});
      }
    },
    onEvent: (frame) => {
      if (frame.job_name !== name) return;
      switch (frame.type) {
        case "execution_started": {
          const e = frame.execution;
          outputs.started(e.id);
          if (!rowsById.has(e.id)) {
            makeRow(e, { open: true, atTop: true });
            execTotal += 1;
            execLoaded += 1;
            showCount();
          } else updateRow(e);
          break;
        }
        case "execution_output":
          outputs.chunk(frame.execution_id, frame.chunk);
          break;
        case "execution_finished": {
          const e = frame.execution;
          outputs.finished(e.id, e.output ?? outputs.text(e.id));
          updateRow(e);
          refreshJob();
          break;
        }
        case "job_deleted":
          announce(`Job ${name} was deleted.`);
          ctx.navigate("/jobs", { replace: true });
          break;
        default:
          if (frame.job) {
            const parentChanged = frame.job.parent_job !== job.parent_job || String(frame.job.dependent_jobs) !== String(job.dependent_jobs);
            job = frame.job;
            showJob();
            loadSummary();
            if (parentChanged) loadGraph().catch(() => {});
          } else refreshJob();
      }
    },
  });

  // running durations tick
  const ticker = setInterval(() => {
    for (const item of rowsById.values()) {
      if (execStatus(item.exec) === "running") {
        const cell = item.row.querySelector(".dur");
        if (cell) cell.textContent = execDuration(item.exec);
      }
    }
  }, 1000);

  // -- actions --

  runBtn.addEventListener("click", async () => {
    runBtn.disabled = true;
    try {
      await api.post(`${api.jobPath(name)}/run`);
      announce(`Job ${name} started.`);
    } catch (err) {
      announce(`Cannot run ${name}: ${err.message}`, "error");
    } finally {
      runBtn.disabled = job.disabled;
    }
  });
  toggleBtn.addEventListener("click", async () => {
    toggleBtn.disabled = true;
    try {
      job = (await api.post(`${api.jobPath(name)}/toggle`)).data;
      showJob();
      await loadSummary();
      announce(job.disabled ? `Job ${name} disabled.` : `Job ${name} enabled.`);
    } catch (err) {
      announce(`Cannot toggle ${name}: ${err.message}`, "error");
    } finally {
      toggleBtn.disabled = false;
    }
  });
  deleteBtn.addEventListener("click", async () => {
    if (!window.confirm(`Delete job ${name} and its executions? This cannot be undone.`)) return;
    try {
      await api.del(api.jobPath(name));
      announce(`Job ${name} deleted.`);
      ctx.navigate("/jobs");
    } catch (err) {
      announce(`Cannot delete ${name}: ${err.message}`, "error");
    }
  });
  clearBtn.addEventListener("click", async () => {
    if (!window.confirm(`Delete every execution of ${name}?`)) return;
    try {
      await api.del(`${api.jobPath(name)}/executions`);
      announce(`Executions of ${name} deleted.`);
      await loadExecutions();
    } catch (err) {
      announce(`Cannot delete the executions: ${err.message}`, "error");
    }
  });

  const stop = () => {
    feed.close();
    clearInterval(ticker);
    refreshJob.cancel();
  };
  showJob();
  try {
    await helloSeen;
    await Promise.all([
      loadSummary(),
      loadExecutions(),
      loadGraph().catch((err) => fill(graphBox, h("p", { class: "error-text" }, err.message))),
    ]);
  } catch (err) {
    stop(); // the router shows the error; nothing of this page keeps running
    throw err;
  }
  ready("job");
  return stop;
}
