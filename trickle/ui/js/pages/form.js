// Create and edit form: every job field, the next five fires as the schedule is typed, and
// the server's validation error shown beside the field it names.

import * as api from "../api.js";
import { announce, debounce, fill, formatLocal, h, parseTime, ready, setTitle } from "../dom.js";

const JSON_FIELDS = ["executor_config", "tags", "metadata", "processors"];
// fields the form has a control for
const FORM_FIELDS = new Set([
  "name", "displayname", "schedule", "timezone", "owner", "owner_email", "disabled", "ephemeral",
  "concurrency", "executor", "executor_config", "parent_job", "starts_at", "expires_at", "retries",
  "retry_interval", "catchup_window", "processors", "tags", "metadata",
]);
// fields the server keeps itself (counts, outcomes, times): sent back as read, never edited
const READ_ONLY = new Set([
  "id", "success_count", "error_count", "last_success", "last_error", "status", "next",
  "missed_count", "skipped_count", "last_skipped", "last_skip_reason", "created_at",
  "updated_at", "dependent_jobs",
]);
const PREVIEW_COUNT = 5;

const pad = (n) => String(n).padStart(2, "0");

/** An API time -> the value of a datetime-local input (the browser's zone). */
function toLocalInput(text) {
  const d = parseTime(text);
  if (!d) return "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A datetime-local value (the browser's zone) -> RFC 3339 in UTC, or null when empty. */
function fromLocalInput(value) {
  if (!value) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? value : d.toISOString().replace(/\.000Z$/, "Z");
}

function zones() {
  try {
    return Intl.supportedValuesOf("timeZone");
  } catch {
    return ["UTC", "Europe/London", "Europe/Berlin", "America/New_York", "Asia/Tokyo"];
  }
}

/** The job's fields that the form has no control for and the server does not keep. */
function extraFields(job) {
  const out = {};
  for (const [key, value] of Object.entries(job || {})) {
    if (!FORM_FIELDS.has(key) && !READ_ONLY.has(key)) out[key] = value;
  }
  return out;
}

export async function render(main, ctx) {
  const editing = ctx.params.length > 0;
  const name = editing ? ctx.params[0] : "";
  let job = null;
  if (editing) {
    try {
      job = (await api.get(api.jobPath(name))).data;
    } catch (err) {
      if (err.status === 404) {
        setTitle("No such job");
        fill(main, h("h1", { tabindex: "-1" }, "No such job"), h("p", {}, `There is no job named “${name}”. `, h("a", { href: "#/jobs" }, "Back to the jobs")));
        ready("form-missing");
        return null;
      }
      throw err;
    }
  }
  setTitle(editing ? `Edit ${name}` : "New job");

  const inputs = {};
  const errors = {};
  const formError = h("div", { class: "form-error", role: "alert", hidden: true });

  // one labelled control with its hint and its error slot
  function control(key, label, el, hint = "") {
    el.id = `f-${key}`;
    el.name = key;
    inputs[key] = el;
    const hintEl = hint ? h("p", { class: "hint", id: `f-${key}-hint` }, hint) : null;
    const err = h("p", { class: "field-error", id: `f-${key}-error`, hidden: true });
    errors[key] = err;
    el.setAttribute("aria-describedby", [hintEl ? hintEl.id : "", err.id].filter(Boolean).join(" "));
    const isCheck = el.type === "checkbox";
    if (isCheck) {
      return h("div", { class: "field field-check", "data-field": key }, el, h("label", { for: el.id }, label), hintEl, err);
    }
    return h("div", { class: "field", "data-field": key }, h("label", { for: el.id }, label), el, hintEl, err);
  }

  const text = (value, props = {}) => h("input", { type: "text", value: value ?? "", autocomplete: "off", ...props });
  const json = (value) =>
    h("textarea", { rows: "4", spellcheck: "false", class: "code", value: value && Object.keys(value).length ? JSON.stringify(value, null, 2) : "" });

  const j = job || {};
  const zoneList = h("datalist", { id: "zones" }, zones().map((z) => h("option", { value: z })));
  const executorList = h("datalist", { id: "executors" }, ["shell", "http"].map((x) => h("option", { value: x })));
  const parentList = h("datalist", { id: "parents" });
  const preview = h("div", { class: "preview", id: "schedule-preview", "aria-live": "polite" });

  const fields = [
    h(
      "fieldset",
      {},
      h("legend", {}, "Job"),
      control("name", "Name", text(j.name, { required: true, readonly: editing, pattern: "[A-Za-z0-9_\\-.]+" }), editing ? "The name cannot change." : "Letters, digits, '-', '_' and '.'; unique."),
      control("displayname", "Display name", text(j.displayname)),
      control("owner", "Owner", text(j.owner)),
      control("owner_email", "Owner email", h("input", { type: "email", value: j.owner_email || "", autocomplete: "off" })),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Schedule"),
      control("schedule", "Schedule", text(j.schedule, { required: true, spellcheck: "false", class: "code" }), "Cron with seconds (0 30 2 * * *), @every 10s, @daily, @at 2024-03-01T12:00:00Z, @manually…"),
      preview,
      control("timezone", "Time zone", text(j.timezone, { list: "zones", placeholder: "UTC" }), "IANA zone; empty is UTC."),
      control("starts_at", "Starts at", h("input", { type: "datetime-local", value: toLocalInput(j.starts_at) }), "In your browser's time zone; empty: now."),
      control("expires_at", "Expires at", h("input", { type: "datetime-local", value: toLocalInput(j.expires_at) }), "In your browser's time zone; empty: never."),
      control("catchup_window", "Catch-up window", text(j.catchup_window, { placeholder: "default" }), "A Go duration (1h, 30m): how late a missed fire may still run."),
      control("disabled", "Disabled", h("input", { type: "checkbox", checked: Boolean(j.disabled) })),
      control("ephemeral", "Ephemeral (delete after its first successful run)", h("input", { type: "checkbox", checked: Boolean(j.ephemeral) })),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Execution"),
      control("executor", "Executor", text(j.executor || (editing ? "" : "shell"), { list: "executors", required: true }), "shell, http, or one an embedding program registered."),
      control("executor_config", "Executor config (JSON object)", json(j.executor_config || (editing ? {} : null)), 'For shell: {"command": "echo hi", "shell": "true", "timeout": "30s"}.'),
      control(
        "concurrency",
        "Concurrency",
        h("select", {}, [["allow", "allow: runs may overlap"], ["forbid", "forbid: skip a fire while running"]].map(([v, t]) => h("option", { value: v, selected: (j.concurrency || "allow") === v }, t))),
      ),
      control("retries", "Retries", h("input", { type: "number", min: "0", step: "1", value: String(j.retries ?? 0) })),
      control("retry_interval", "Retry interval", text(j.retry_interval, { placeholder: "0s" }), "A Go duration between a failure and its retry."),
      control("parent_job", "Parent job", text(j.parent_job, { list: "parents" }), "This job runs after the parent succeeds; leave the schedule @manually if it should only run then."),
      control("processors", "Processors (JSON object)", json(j.processors), 'E.g. {"log": {}, "files": {"log_dir": "/var/log/jobs"}}.'),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Placement and labels"),
      control("tags", "Tags (JSON object)", json(j.tags), 'Nodes to run on: {"role": "web:2"} runs on 2 nodes tagged role=web.'),
      control("metadata", "Metadata (JSON object)", json(j.metadata), "Free labels, searchable with metadata[key]=value."),
      control("extra", "Other fields (JSON object)", json(extraFields(j)), "Fields of the job this form has no control for, as the API names them."),
    ),
  ];

  const submit = h("button", { type: "submit", class: "btn btn-primary" }, editing ? "Save" : "Create job");
  const cancel = h("a", { class: "btn", href: editing ? `#/jobs/${encodeURIComponent(name)}` : "#/jobs" }, "Cancel");
  const form = h("form", { class: "job-form", novalidate: true }, formError, fields, h("div", { class: "form-actions" }, submit, cancel), zoneList, executorList, parentList);

  fill(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", editing ? [h("a", { href: `#/jobs/${encodeURIComponent(name)}` }, name), " / edit"] : "new"),
    h("h1", { tabindex: "-1" }, editing ? `Edit ${name}` : "New job"),
    form,
  );

  function clearErrors() {
    formError.hidden = true;
    formError.textContent = "";
    for (const [key, err] of Object.entries(errors)) {
      err.hidden = true;
      err.textContent = "";
      delete err.dataset.from;
      inputs[key].removeAttribute("aria-invalid");
    }
  }

  function showError(fieldName, message, { focus = true } = {}) {
    let key = (fieldName || "").split(/[.[]/)[0];
    if (key && !errors[key] && !READ_ONLY.has(key) && !FORM_FIELDS.has(key)) key = "extra";
    if (key && errors[key]) {
      errors[key].textContent = message;
      errors[key].hidden = false;
      inputs[key].setAttribute("aria-invalid", "true");
      if (focus) inputs[key].focus();
    } else {
      formError.textContent = message;
      formError.hidden = false;
      if (focus) formError.scrollIntoView({ block: "nearest" });
    }
  }

  // -- the next fires, as the schedule is typed --
  let previewAbort = null;
  const updatePreview = debounce(async () => {
    const schedule = inputs.schedule.value.trim();
    for (const key of ["schedule", "timezone"]) {
      if (errors[key].dataset.from === "preview") {
        errors[key].hidden = true;
        errors[key].textContent = "";
        delete errors[key].dataset.from;
        inputs[key].removeAttribute("aria-invalid");
      }
    }
    if (!schedule) {
      fill(preview, "");
      return;
    }
    if (previewAbort) previewAbort.abort();
    previewAbort = new AbortController();
    try {
      const { data } = await api.get(
        "schedule/next",
        { schedule, timezone: inputs.timezone.value.trim(), job: inputs.name.value.trim(), count: PREVIEW_COUNT },
        previewAbort.signal,
      );
      if (!data.next.length) {
        fill(preview, h("p", { class: "muted" }, "This schedule never fires from now on."));
        return;
      }
      fill(
        preview,
        h("p", { class: "preview-label", id: "preview-label" }, `Next ${data.next.length} fires:`),
        h(
          "ol",
          { class: "fires", "aria-labelledby": "preview-label" },
          data.next.map((t) => {
            const d = parseTime(t);
            return h("li", {}, h("time", { datetime: t }, t), d ? h("span", { class: "muted" }, ` (${formatLocal(d)} your time)`) : "");
          }),
        ),
      );
    } catch (err) {
      if (err.name === "AbortError") return;
      fill(preview, "");
      const key = err.field === "timezone" ? "timezone" : "schedule";
      showError(key, err.message, { focus: false });
      errors[key].dataset.from = "preview";
    }
  }, 250);
  inputs.schedule.addEventListener("input", updatePreview);
  inputs.timezone.addEventListener("input", updatePreview);
  inputs.timezone.addEventListener("change", updatePreview);

  // -- parent job suggestions --
  const suggestParents = debounce(async () => {
    const q = inputs.parent_job.value.trim();
    try {
      const { data } = await api.get("jobs", { q, _start: 0, _end: 20, _sort: "name", _order: "ASC" });
      fill(parentList, data.filter((p) => p.name !== inputs.name.value).map((p) => h("option", { value: p.name })));
    } catch {
      // suggestions only
    }
  }, 250);
  inputs.parent_job.addEventListener("input", suggestParents);

  function body() {
    // an edit sends the whole job back (as Dkron's UI does), so a field the form does not
    // know is kept rather than reset by the full replace
    const out = {
      ...(job || {}),
      name: inputs.name.value.trim(),
      displayname: inputs.displayname.value,
      schedule: inputs.schedule.value.trim(),
      timezone: inputs.timezone.value.trim(),
      owner: inputs.owner.value,
      owner_email: inputs.owner_email.value.trim(),
      disabled: inputs.disabled.checked,
      ephemeral: inputs.ephemeral.checked,
      concurrency: inputs.concurrency.value,
      executor: inputs.executor.value.trim(),
      parent_job: inputs.parent_job.value.trim(),
      starts_at: fromLocalInput(inputs.starts_at.value),
      expires_at: fromLocalInput(inputs.expires_at.value),
    };
    const retries = inputs.retries.value.trim();
    if (retries !== "") {
      if (!/^\d+$/.test(retries)) throw Object.assign(new Error("a whole number, 0 or more"), { field: "retries" });
      out.retries = Number(retries);
    } else out.retries = 0;
    for (const key of ["retry_interval", "catchup_window"]) {
      const v = inputs[key].value.trim();
      if (v) out[key] = v;
      else delete out[key]; // the default
    }
    for (const key of [...JSON_FIELDS, "extra"]) {
      const raw = inputs[key].value.trim();
      if (!raw) {
        out[key] = {};
        continue;
      }
      let value;
      try {
        value = JSON.parse(raw);
      } catch (err) {
        throw Object.assign(new Error(`not valid JSON: ${err.message}`), { field: key });
      }
      if (!value || typeof value !== "object" || Array.isArray(value)) {
        throw Object.assign(new Error("expected a JSON object ({...})"), { field: key });
      }
      out[key] = value;
    }
    const extra = out.extra;
    delete out.extra;
    for (const key of Object.keys(extraFields(job))) delete out[key];
    for (const [key, value] of Object.entries(extra)) {
      if (FORM_FIELDS.has(key) || READ_ONLY.has(key)) {
        throw Object.assign(new Error(`“${key}” has its own control (or is the server's): remove it here`), { field: "extra" });
      }
      out[key] = value;
    }
    return out;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    let payload;
    try {
      payload = body();
    } catch (err) {
      showError(err.field, err.message);
      return;
    }
    if (!payload.name) return showError("name", "A name is required.");
    if (!payload.schedule) return showError("schedule", "A schedule is required.");
    submit.disabled = true;
    try {
      if (editing) {
        await api.put(api.jobPath(name), payload);
      } else {
        let exists = false;
        try {
          await api.get(api.jobPath(payload.name));
          exists = true;
        } catch (err) {
          if (err.status !== 404) throw err;
        }
        if (exists) {
          showError("name", `A job named “${payload.name}” exists already: choose another name, or edit that job.`);
          return;
        }
        await api.post("jobs", payload);
      }
      announce(editing ? `Job ${payload.name} saved.` : `Job ${payload.name} created.`);
      ctx.navigate(`/jobs/${encodeURIComponent(payload.name)}`);
    } catch (err) {
      showError(err.field, err.message);
    } finally {
      submit.disabled = false;
    }
  });

  if (inputs.schedule.value) updatePreview();
  ready(editing ? "edit" : "new");
  return () => {
    updatePreview.cancel();
    suggestParents.cancel();
    if (previewAbort) previewAbort.abort();
  };
}
