// Members: every node of the cluster with its status and tags, the leader marked.

import * as api from "../api.js";
import { debounce, fill, h, ready, scroller, setTitle } from "../dom.js";
import { subscribe } from "../feed.js";

/** The members table; `leader` is the leader's name (or null); `peers` Raft's servers. */
export function membersTable(members, leader, { compact = false, peers = null } = {}) {
  if (!members.length) return h("p", { class: "muted" }, "No members.");
  const voters = new Map((peers || []).map((p) => [p.id, p]));
  const sorted = [...members].sort((a, b) => a.Name.localeCompare(b.Name));
  const head = ["Name", "Address", "Status", "Role", "Tags"];
  if (peers) head.splice(4, 0, "Raft");
  const rows = sorted.map((m) => {
    const isLeader = m.Name === leader;
    const tags = Object.entries(m.Tags || {}).sort(([a], [b]) => a.localeCompare(b));
    const role = (m.Tags && (m.Tags.server === "true" ? "server" : m.Tags.server === "false" ? "agent" : "")) || "";
    const cells = [
      h(
        "th",
        { scope: "row" },
        m.Name,
        isLeader ? [" ", h("span", { class: "badge badge-leader", title: "The Raft leader" }, "leader")] : "",
      ),
      h("td", {}, `${m.Addr}:${m.Port}`),
      h("td", {}, h("span", { class: `badge badge-member-${m.statusText}` }, m.statusText)),
      h("td", {}, role || h("span", { class: "muted" }, "—")),
      h(
        "td",
        {},
        tags.length
          ? h("div", { class: "tag-list" }, tags.map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`)))
          : h("span", { class: "muted" }, "none"),
      ),
    ];
    if (peers) {
      const peer = voters.get(m.Name);
      cells.splice(4, 0, h("td", {}, peer ? (peer.voter ? "voter" : "non-voter") : h("span", { class: "muted" }, "—")));
    }
    return h("tr", { class: isLeader ? "is-leader" : "", "data-member": m.Name }, cells);
  });
  const table = h(
    "table",
    { class: compact ? "data compact" : "data" },
    h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows),
  );
  return scroller("Members", table);
}

export async function render(main) {
  setTitle("Members");
  const box = h("div", {});
  const summary = h("p", { class: "muted" });
  fill(main, h("h1", { tabindex: "-1" }, "Members"), summary, box);

  async function load() {
    const [{ data: members }, leader, peers] = await Promise.all([
      api.get("members"),
      api.get("leader").then((r) => r.data).catch(() => null),
      api.get("raft/peers").then((r) => r.data).catch(() => null),
    ]);
    const byStatus = {};
    for (const m of members) byStatus[m.statusText] = (byStatus[m.statusText] || 0) + 1;
    summary.textContent =
      `${members.length} member${members.length === 1 ? "" : "s"}: ` +
      Object.entries(byStatus).map(([k, v]) => `${v} ${k}`).join(", ") +
      `. Leader: ${leader ? leader.Name : "none"}.`;
    fill(box, membersTable(members, leader ? leader.Name : null, { peers }));
  }

  await load();
  const refresh = debounce(() => load().catch(() => {}), 300);
  const feed = subscribe({
    kinds: ["member_joined", "member_updated", "member_failed", "member_left", "member_reaped", "leader_changed"],
    onOpen: (_hello, reconnected) => reconnected && refresh(),
    onEvent: () => refresh(),
  });
  ready("members");
  return () => {
    feed.close();
    refresh.cancel();
  };
}
