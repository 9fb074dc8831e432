// Live output of executions: chunks from the feed appended as text to a <pre>, and for a
// run that started before the page subscribed, /v1/busy's output so far merged with the
// chunks that arrived meanwhile (without repeating the ones the snapshot already holds).

const MAX_CHARS = 2_000_000; // a page keeps at most this much output per execution

/** How many of `chunks` (from the first) the end of `snapshot` already contains. */
export function coveredChunks(snapshot, chunks) {
  let best = 0;
  let joined = "";
  for (let k = 1; k <= chunks.length; k++) {
    joined += chunks[k - 1];
    if (joined.length > snapshot.length) break;
    if (snapshot.endsWith(joined)) best = k;
  }
  return best;
}

export class OutputStreams {
  constructor() {
    // execution id -> {text, pre, buffered: string[] | null (null: live, no snapshot due)}
    this.streams = new Map();
  }

  _get(id) {
    let st = this.streams.get(id);
    if (!st) {
      st = { text: "", pre: null, buffered: [] };
      this.streams.set(id, st);
    }
    return st;
  }

  /** The execution started while subscribed: every chunk will be seen, no snapshot due. */
  started(id) {
    const st = this._get(id);
    if (st.buffered) {
      st.text += st.buffered.join("");
      st.buffered = null;
      this._show(st);
    }
  }

  /** A chunk from the feed. */
  chunk(id, text) {
    const st = this._get(id);
    if (st.buffered) st.buffered.push(text);
    else {
      st.text += text;
      this._append(st, text);
    }
  }

  /** The output so far from /v1/busy (or "" when not found) for a run that started before
   * the subscription: merged with the chunks buffered since. */
  seed(id, snapshot) {
    const st = this._get(id);
    if (!st.buffered) return;
    const k = coveredChunks(snapshot, st.buffered);
    st.text = snapshot + st.buffered.slice(k).join("");
    st.buffered = null;
    this._show(st);
  }

  /** The execution finished with `output` (its stored output, authoritative). */
  finished(id, output) {
    const st = this._get(id);
    st.buffered = null;
    if (typeof output === "string" && output !== st.text) {
      st.text = output;
      this._show(st);
    }
  }

  text(id) {
    const st = this.streams.get(id);
    return st ? st.text + (st.buffered ? st.buffered.join("") : "") : "";
  }

  has(id) {
    return this.streams.has(id);
  }

  /** Show execution `id`'s output in `pre` from now on. */
  bind(id, pre) {
    const st = this._get(id);
    st.pre = pre;
    this._show(st);
  }

  _show(st) {
    if (!st.pre) return;
    if (st.text.length > MAX_CHARS) st.text = st.text.slice(-MAX_CHARS);
    st.pre.textContent = st.text;
    st.pre.scrollTop = st.pre.scrollHeight;
  }

  _append(st, text) {
    const pre = st.pre;
    if (!pre) return;
    if (st.text.length > MAX_CHARS) {
      this._show(st);
      return;
    }
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    pre.append(document.createTextNode(text));
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }
}
