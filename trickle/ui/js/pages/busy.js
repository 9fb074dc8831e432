// Busy: what runs now on the cluster, with each run's output as it is printed.

import * as api from "../api.js";
import { badge, duration, fill, h, parseTime, ready, setTitle, timeEl } from "../dom.js";
import { subscribe } from "../feed.js";
import { OutputStreams } from "../output.js";

const HELLO_TIMEOUT_MS = 3000;
const FINISHED_LINGER_MS = 15000; // a finished run stays shown this long, marked finished

export async function render(main) {
  setTitle("Busy");
  const list = h("div", { class: "busy-list" });
  const empty = h("p", { class: "muted", id: "busy-empty" }, "Nothing is running.");
  const count = h("p", { class: "muted", "aria-live": "polite" });
  fill(main, h("h1", { tabindex: "-1" }, "Busy"), h("p", { class: "hint" }, "Runs in progress; output appears as it is printed."), count, empty, list);

  const outputs = new OutputStreams();
  const cards = new Map(); // execution id -> {card, exec, timer}
  let firstHello;
  const helloSeen = new Promise((resolve) => {
    firstHello = resolve;
    setTimeout(resolve, HELLO_TIMEOUT_MS);
  });

  function updateCount() {
    const running = [...cards.values()].filter((c) => !c.done).length;
    empty.hidden = cards.size > 0;
    count.textContent = running ? `${running} running.` : "";
  }

  function add(e) {
    if (cards.has(e.id)) return cards.get(e.id);
    const pre = h("pre", { class: "output", tabindex: "0", "aria-label": `Output of ${e.job_name}, execution ${e.id}` });
    const elapsed = h("span", { class: "elapsed" });
    const state = h("span", {}, e.queued ? badge("queued", "queued") : badge("running"));
    const card = h(
      "article",
      { class: "panel busy-card", "data-execution": e.id, "data-job": e.job_name },
      h(
        "header",
        { class: "busy-head" },
        h("h2", {}, h("a", { href: "#/jobs/" + encodeURIComponent(e.job_name) }, e.job_name)),
        state,
        h("span", { class: "muted" }, ` on ${e.node_name || "?"}, started `, timeEl(e.started_at), ", ", elapsed),
      ),
      pre,
    );
    list.prepend(card);
    const item = { card, exec: e, pre, elapsed, state, done: false };
    cards.set(e.id, item);
    outputs.bind(e.id, pre);
    updateCount();
    return item;
  }

  function finish(e) {
    const item = cards.get(e.id) || add(e);
    item.exec = e;
    item.done = true;
    outputs.finished(e.id, e.output ?? outputs.text(e.id));
    fill(item.state, badge(e.success ? "success" : "failed", e.success ? "finished" : "failed"));
    item.card.classList.add("is-done");
    item.timer = setTimeout(() => {
      item.card.remove();
      cards.delete(e.id);
      updateCount();
    }, FINISHED_LINGER_MS);
    updateCount();
  }

  async function load() {
    const { data } = await api.get("busy");
    for (const item of [...cards.values()]) {
      if (!item.done && !data.some((b) => b.id === item.exec.id)) {
        item.card.remove();
        cards.delete(item.exec.id);
      }
    }
    for (const b of data) {
      add(b);
      outputs.seed(b.id, b.output || "");
    }
    updateCount();
  }

  const feed = subscribe({
    kinds: ["execution_started", "execution_output", "execution_finished"],
    onOpen: (_hello, reconnected) => {
      firstHello();
      if (reconnected) load().catch(() => {});
    },
    onEvent: (frame) => {
      if (frame.type === "execution_started") {
        outputs.started(frame.execution.id);
        add(frame.execution);
      } else if (frame.type === "execution_output") {
        outputs.chunk(frame.execution_id, frame.chunk);
      } else if (frame.type === "execution_finished") {
        finish(frame.execution);
      }
    },
  });

  const ticker = setInterval(() => {
    for (const item of cards.values()) {
      if (item.done) continue;
      const start = parseTime(item.exec.started_at);
      item.elapsed.textContent = start ? `running for ${duration(Date.now() - start.getTime())}` : "";
    }
  }, 1000);

  const stop = () => {
    feed.close();
    clearInterval(ticker);
    for (const item of cards.values()) clearTimeout(item.timer);
  };
  try {
    await helloSeen;
    await load();
  } catch (err) {
    stop(); // the router shows the error; nothing of this page keeps running
    throw err;
  }
  ready("busy");
  return stop;
}
