// The live feed client (GET /v1/events, a WebSocket; docs/feed.md): one connection per
// subscription, filtered on the server, reconnecting with backoff when it drops.

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10000;

function feedUrl(jobs, kinds) {
  const u = new URL("../v1/events", document.baseURI);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  const params = [];
  if (jobs && jobs.length) params.push("jobs=" + jobs.map(encodeURIComponent).join(","));
  if (kinds && kinds.length) params.push("kinds=" + kinds.map(encodeURIComponent).join(","));
  u.search = params.join("&");
  return u.toString();
}

/**
 * Subscribe to the feed. `onEvent(frame)` gets every event frame (unknown types included:
 * ignore them); `onOpen(hello, reconnected)` runs on each (re)connection, where a page
 * reloads what it shows, since events may have been missed while disconnected;
 * `onLagged(frame)` when the server dropped events for this connection (default: onOpen);
 * `onState("connecting" | "live" | "offline")` as the connection changes.
 * Returns {close()}.
 */
export function subscribe({ jobs = null, kinds = null, onEvent, onOpen, onLagged, onState }) {
  let ws = null;
  let closed = false;
  let backoff = MIN_BACKOFF_MS;
  let timer = null;
  let opened = false;

  const state = (value) => onState && onState(value);

  function connect() {
    if (closed) return;
    state("connecting");
    try {
      ws = new WebSocket(feedUrl(jobs, kinds));
    } catch {
      retry();
      return;
    }
    ws.addEventListener("message", (msg) => {
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== "object") return;
      if (frame.type === "hello") {
        backoff = MIN_BACKOFF_MS;
        state("live");
        if (onOpen) onOpen(frame, opened);
        opened = true;
      } else if (frame.type === "lagged") {
        if (onLagged) onLagged(frame);
        else if (onOpen) onOpen(frame, true);
      } else if (frame.type === "subscribed" || frame.type === "error") {
        // answers to subscribe messages, which this client does not send
      } else if (onEvent) {
        onEvent(frame);
      }
    });
    ws.addEventListener("close", () => {
      ws = null;
      if (!closed) retry();
    });
  }

  function retry() {
    state("offline");
    clearTimeout(timer);
    timer = setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
  }

  connect();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      if (ws) ws.close(1000);
      ws = null;
    },
  };
}
