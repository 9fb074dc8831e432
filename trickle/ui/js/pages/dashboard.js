// Dashboard: leader, nodes, job counts by status, the 30-day chart, live activity.

import * as api from "../api.js";
import { debounce, fill, h, ready, s, scroller, setTitle, timeEl } from "../dom.js";
import { subscribe } from "../feed.js";
import { membersTable } from "./members.js";

const STRIP_SIZE = 25;
const COUNTS = [
  ["Jobs", {}, ""],
  ["Succeeded last", { status: "success" }, "success"],
  ["Failed last", { status: "failed" }, "failed"],
  ["Partially failed", { status: "partially_failed" }, "partially_failed"],
  ["Not run yet", { status: "untriggered" }, "untriggered"],
  ["Disabled", { disabled: "true" }, "disabled"],
];

export async function render(main, ctx) {
  setTitle("Dashboard");
  const cards = h("div", { class: "cards", "aria-live": "off" });
  const chart = h("div", { class: "chart-box" });
  const nodes = h("div", {});
  const strip = h("ol", { class: "activity", role: "log", "aria-live": "off", "aria-label": "Live activity" });
  const stripEmpty = h("p", { class: "muted" }, "Nothing happened since this page was opened; events appear here as they happen.");
  fill(
    main,
    h("h1", { tabindex: "-1" }, "Dashboard"),
    h("section", { "aria-labelledby": "counts-h" }, h("h2", { id: "counts-h", class: "sr-only" }, "Summary"), cards),
    h(
      "div",
      { class: "dash-grid" },
      h("section", { class: "panel", "aria-labelledby": "chart-h" }, h("h2", { id: "chart-h" }, "Executions, last 30 days"), chart),
      h("section", { class: "panel", "aria-labelledby": "activity-h" }, h("h2", { id: "activity-h" }, "Live activity"), stripEmpty, strip),
    ),
    h("section", { class: "panel", "aria-labelledby": "nodes-h" }, h("h2", { id: "nodes-h" }, "Nodes"), nodes),
  );

  // runs in progress: /v1/busy at load, then kept by the feed's started/finished events
  // (a busy list read right after a finish may still hold the run)
  let running = null;
  const busyValue = h("span", { class: "card-value", "data-testid": "running" }, "?");
  const showRunning = () => {
    busyValue.textContent = running === null ? "?" : String(running.size);
  };

  async function loadCards() {
    const [leader, busy, ...counts] = await Promise.all([
      api.get("leader").then((r) => r.data).catch(() => null),
      api.get("busy").then((r) => r.data).catch(() => null),
      ...COUNTS.map(([, params]) => api.countJobs(params)),
    ]);
    const leaderCard = h(
      "div",
      { class: "card" },
      h("span", { class: "card-label" }, "Leader"),
      h("span", { class: "card-value card-text", "data-testid": "leader" }, leader ? leader.Name : "none"),
    );
    if (busy !== null && running === null) running = new Set(busy.map((b) => b.id));
    showRunning();
    const busyCard = h("a", { class: "card", href: "#/busy" }, h("span", { class: "card-label" }, "Running now"), busyValue);
    const countCards = COUNTS.map(([label, params, key], i) => {
      const query = new URLSearchParams(params).toString();
      return h(
        "a",
        { class: `card card-${key || "all"}`, href: "#/jobs" + (query ? "?" + query : ""), "data-count": key || "all" },
        h("span", { class: "card-label" }, label),
        h("span", { class: "card-value" }, String(counts[i] ?? 0)),
      );
    });
    fill(cards, leaderCard, busyCard, countCards);
  }

  async function loadChart() {
    const { data } = await api.get("stats", { days: 30 });
    fill(chart, statsChart(data.stats || []));
  }

  async function loadNodes() {
    const [{ data: members }, leader] = await Promise.all([
      api.get("members"),
      api.get("leader").then((r) => r.data).catch(() => null),
    ]);
    fill(nodes, membersTable(members, leader ? leader.Name : null, { compact: true }));
  }

  const refreshCards = debounce(() => loadCards().catch(() => {}), 800);
  const refreshChart = debounce(() => loadChart().catch(() => {}), 2000);
  const refreshNodes = debounce(() => loadNodes().catch(() => {}), 500);

  await Promise.all([loadCards(), loadChart(), loadNodes()]);

  function addActivity(frame) {
    const item = activityItem(frame);
    if (!item) return;
    stripEmpty.hidden = true;
    strip.prepend(item);
    while (strip.children.length > STRIP_SIZE) strip.lastElementChild.remove();
  }

  const feed = subscribe({
    kinds: [
      "job_created", "job_updated", "job_deleted", "job_toggled",
      "execution_started", "execution_finished", "fire_skipped", "fire_missed",
      "member_joined", "member_updated", "member_failed", "member_left", "member_reaped",
      "leader_changed",
    ],
    onOpen: (_hello, reconnected) => {
      if (reconnected) {
        running = null; // re-read from /v1/busy
        refreshCards();
        refreshChart();
        refreshNodes();
      }
    },
    onEvent: (frame) => {
      addActivity(frame);
      if (running && frame.execution && frame.type === "execution_started") running.add(frame.execution.id);
      if (running && frame.execution && frame.type === "execution_finished") running.delete(frame.execution.id);
      showRunning();
      if (frame.type.startsWith("job_") || frame.type.startsWith("execution_")) refreshCards();
      if (frame.type === "execution_finished") refreshChart();
      if (frame.type.startsWith("member_") || frame.type === "leader_changed") {
        refreshNodes();
        refreshCards();
      }
    },
  });
  ready("dashboard");
  return () => {
    feed.close();
    refreshCards.cancel();
    refreshChart.cancel();
    refreshNodes.cancel();
  };
}

function jobLink(name) {
  return h("a", { href: "#/jobs/" + encodeURIComponent(name) }, name);
}

/** One line of the activity strip for a feed frame, or null for kinds it does not show. */
export function activityItem(frame) {
  const at = frame.at ? timeEl(frame.at) : "";
  const line = (...parts) => h("li", { class: `act act-${frame.type}` }, at, " ", ...parts);
  const exec = frame.execution || {};
  switch (frame.type) {
    case "job_created":
      return line("Job ", jobLink(frame.job_name), " created");
    case "job_updated":
      return line("Job ", jobLink(frame.job_name), " updated");
    case "job_deleted":
      return line("Job ", h("strong", {}, frame.job_name), " deleted");
    case "job_toggled":
      return line("Job ", jobLink(frame.job_name), frame.job && frame.job.disabled ? " disabled" : " enabled");
    case "execution_started":
      return line(jobLink(frame.job_name), ` started on ${exec.node_name || "?"}`, exec.trigger ? ` (${exec.trigger})` : "");
    case "execution_finished":
      return line(
        jobLink(frame.job_name),
        exec.success ? " succeeded" : " failed",
        exec.node_name ? ` on ${exec.node_name}` : "",
        exec.exit_code !== undefined && exec.exit_code !== null && exec.exit_code !== "" ? ` (exit ${exec.exit_code})` : "",
      );
    case "fire_skipped":
      return line(jobLink(frame.job_name), " skipped a fire", frame.reason ? `: ${frame.reason}` : "");
    case "fire_missed":
      return line(jobLink(frame.job_name), " missed a fire");
    case "member_joined":
    case "member_updated":
    case "member_failed":
    case "member_left":
    case "member_reaped":
      return line("Node ", h("strong", {}, (frame.member && frame.member.Name) || "?"), " ", frame.type.slice(7));
    case "leader_changed":
      return line("Leader is now ", h("strong", {}, frame.leader || "nobody"));
    default:
      return null;
  }
}

function niceMax(value) {
  if (value <= 4) return 4;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return 10 * magnitude;
}

/** An inline SVG bar chart of /v1/stats (successes below, failures stacked above), with
 * the same figures in a table for screen readers. */
export function statsChart(stats) {
  const days = stats.map((d) => ({
    date: (d.date || "").slice(0, 10),
    ok: Number(d.success_count) || 0,
    bad: Number(d.failed_count) || 0,
  }));
  const totalOk = days.reduce((a, d) => a + d.ok, 0);
  const totalBad = days.reduce((a, d) => a + d.bad, 0);
  const W = 720;
  const H = 220;
  const left = 40;
  const bottom = 24;
  const top = 10;
  const plotW = W - left - 8;
  const plotH = H - top - bottom;
  const max = niceMax(Math.max(1, ...days.map((d) => d.ok + d.bad)));
  const slot = plotW / Math.max(days.length, 1);
  const barW = Math.max(2, slot * 0.7);
  const y = (v) => top + plotH - (v / max) * plotH;
  const summary = `${totalOk} successful and ${totalBad} failed executions over ${days.length} days.`;
  const svg = s(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-labelledby": "chart-title chart-desc", preserveAspectRatio: "xMidYMid meet" },
    s("title", { id: "chart-title" }, "Executions per day"),
    s("desc", { id: "chart-desc" }, summary),
  );
  for (const frac of [0, 0.25, 0.5, 0.75, 1]) {
    const v = max * frac;
    svg.append(
      s("line", { x1: left, x2: W - 8, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, String(Math.round(v * 10) / 10)),
    );
  }
  days.forEach((d, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    const g = s("g", { class: "bar" }, s("title", {}, `${d.date}: ${d.ok} succeeded, ${d.bad} failed`));
    if (d.ok) g.append(s("rect", { x, width: barW, y: y(d.ok), height: y(0) - y(d.ok), class: "ok" }));
    if (d.bad) g.append(s("rect", { x, width: barW, y: y(d.ok + d.bad), height: y(d.ok) - y(d.ok + d.bad), class: "bad" }));
    // an invisible full-height target so the tooltip shows on empty days too
    g.append(s("rect", { x: left + i * slot, width: slot, y: top, height: plotH, class: "hit" }));
    svg.append(g);
    if (i % 5 === 0 || i === days.length - 1) {
      svg.append(s("text", { x: x + barW / 2, y: H - 6, class: "axis", "text-anchor": "middle" }, d.date.slice(5)));
    }
  });
  const legend = h(
    "p",
    { class: "legend" },
    h("span", { class: "key key-ok" }),
    ` succeeded (${totalOk}) `,
    h("span", { class: "key key-bad" }),
    ` failed (${totalBad})`,
  );
  const table = h(
    "table",
    { class: "data" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Day"), h("th", { scope: "col" }, "Succeeded"), h("th", { scope: "col" }, "Failed"))),
    h("tbody", {}, days.map((d) => h("tr", {}, h("td", {}, d.date), h("td", {}, String(d.ok)), h("td", {}, String(d.bad))))),
  );
  return [svg, legend, h("details", {}, h("summary", {}, "The figures as a table"), scroller("Executions per day", table))];
}
