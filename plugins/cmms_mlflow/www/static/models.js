// The Models page (cmms_mlflow.www.ui): reads and acts through the model API (/api/v1/ml), and answers
// approvals through Airflow's own human-in-the-loop endpoint (/api/v2/.../hitlDetails), both with
// the user's Airflow session cookie: the page can do only what Airflow lets that user do. Every
// value reaches the page as text (textContent or an attribute set through the DOM, never
// innerHTML): model names, column names, reasons and comments are user data. Links go only to
// http(s) URLs or paths on this origin, and a link that replaces Airflow's page ("top") only to
// this origin: whatever a tag says, Airflow's tab is never sent to another site.
"use strict";

(() => {
  const ROOT = new URL(document.currentScript.src).pathname.replace(/\/cmms-ui\/static\/models\.js$/, "");
  const API = `${ROOT}/api/v1/ml`;
  const AIRFLOW_API = `${ROOT}/api/v2`;
  const UI = `${ROOT}/cmms-ui`;
  const main = document.getElementById("main");
  const statusLine = document.getElementById("status");

  // --- DOM helpers -----------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function safeHref(url) {
    if (typeof url !== "string" || url === "") return null;
    if (url.startsWith("/") && !url.startsWith("//")) return url;
    try {
      const parsed = new URL(url);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch {
      return null;
    }
  }

  // Only pages of this origin (Airflow's own) may replace Airflow's page.
  function sameOrigin(href) {
    try {
      return new URL(href, window.location.href).origin === window.location.origin;
    } catch {
      return false;
    }
  }

  // A link out of the page: "top" replaces Airflow's page (an Airflow run; same origin only), "new"
  // opens a tab (MLflow). Airflow frames this page in a sandbox without top navigation or popups,
  // so the click is replayed on a link in Airflow's own (same-origin) document.
  function outLink(text, url, where) {
    const href = safeHref(url);
    if (href === null || (where === "top" && !sameOrigin(href))) return el("span", { class: "muted", text: "—" });
    return el("a", { href, "data-out": where, rel: where === "new" ? "noopener noreferrer" : null }, text);
  }

  function pageLink(text, path) {
    return el("a", { href: `${UI}${path}` }, text);
  }

  document.addEventListener("click", (event) => {
    const link = event.target instanceof Element ? event.target.closest("a[data-out]") : null;
    if (link === null || window.top === window) return;
    if (link.dataset.out === "top" && !sameOrigin(link.href)) {
      event.preventDefault(); // never replayed in Airflow's window
      return;
    }
    try {
      const top = window.top.document;
      const replay = top.createElement("a");
      replay.href = link.href;
      if (link.dataset.out === "new") {
        replay.target = "_blank";
        replay.rel = "noopener noreferrer";
      }
      top.body.append(replay);
      replay.click();
      replay.remove();
      event.preventDefault();
    } catch {
      // Framed by another origin: leave the click to the browser.
    }
  });

  const dash = () => el("span", { class: "muted", text: "—" });
  // An ISO time as "2026-03-01 02:00:00Z" (UTC, to the second); the text as it came if unparsable.
  const when = (iso) => {
    const ms = Date.parse(iso || "");
    return Number.isNaN(ms) ? (iso || "?") : `${new Date(ms).toISOString().slice(0, 19).replace("T", " ")}Z`;
  };
  const fmt = (x, digits = 4) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "—");
  const badge = (text, kind) => el("span", { class: `badge ${kind || String(text).toLowerCase()}`, text });

  function say(message, isError) {
    statusLine.textContent = message;
    statusLine.className = isError ? "error" : "";
  }

  // --- the API -----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
    }
  }

  async function call(url, options) {
    const response = await fetch(url, {
      credentials: "same-origin",
      ...options,
      headers: { Accept: "application/json", ...(options && options.headers) },
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const detail = body && body.detail !== undefined ? body.detail : response.statusText;
      throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return body;
  }

  const api = (path, options) => call(`${API}${path}`, options);

  const modelPath = (name) => `/models/${encodeURIComponent(name)}`;
  const versionPath = (name, version) => `${modelPath(name)}/versions/${encodeURIComponent(version)}`;

  // overrideApproval: an approver promotes a version whose approval was rejected or timed out
  // (the API refuses it otherwise); the reason is recorded as the override's.
  function promote(name, version, reason, expectedChampion, overrideApproval) {
    return api(`${versionPath(name, version)}/promote`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ stage: "Production", reason, expectedChampion, overrideApproval: Boolean(overrideApproval) }),
    });
  }

  const REFUSED_APPROVALS = ["rejected", "timed_out"];

  // The promote form of a version, if this user may promote it: none while a person is asked; for a
  // version whose approval was refused, only an approver's explicit override.
  function promoteForm(name, view, permissions, expectedChampion) {
    if (view.stage === "Production" || view.approvalStatus === "pending") return null;
    if (view.artifacts && view.artifacts !== "present") return null;  // pruned: it can serve no more
    const refused = REFUSED_APPROVALS.includes(view.approvalStatus);
    if (refused) {
      if (!permissions.override) return null;
      return actionForm(`Override the ${view.approvalStatus.replace("_", " ")} approval and promote v${view.version}`,
        (reason) => promote(name, view.version, reason, expectedChampion, true), "override");
    }
    if (!permissions.promote) return null;
    return actionForm(`Promote v${view.version}`,
      (reason) => promote(name, view.version, reason, expectedChampion, false), "promote");
  }

  // Airflow's own answer to a human-in-the-loop task, as its Required actions page sends it: the
  // DAG's approval step then records it on the version under the registry lock and branches.
  function answerApproval(approval, option, comment) {
    const path = `/dags/${encodeURIComponent(approval.dagId)}/dagRuns/${encodeURIComponent(approval.runId)}` +
      `/taskInstances/${encodeURIComponent(approval.taskId)}/${approval.mapIndex}/hitlDetails`;
    return call(`${AIRFLOW_API}${path}`, {
      method: "PATCH",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ chosen_options: [option], params_input: { comment } }),
    });
  }

  // Runs answered from this page: the list refreshes itself until they finish (a few seconds to
  // record the answer, then promote_model or reject_model).
  const following = new Set();
  let refreshes = 0;
  let refreshTimer = null;

  // A one-field form (the reason) that runs `action` through the API, then reloads the page's data.
  function actionForm(label, action, data) {
    const reason = el("input", {
      name: "reason", required: true, minlength: 3, maxlength: 500, placeholder: "Reason (kept in MLflow)",
      "aria-label": `Reason: ${label}`,
    });
    const button = el("button", { type: "submit", "data-action": data }, label);
    const form = el("form", { class: "action" }, reason, button);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!form.reportValidity()) return;
      button.disabled = true;
      try {
        const outcome = await action(reason.value.trim());
        say(`${label}: done (v${outcome.version} is now ${outcome.stage}).`);
        await route();
      } catch (error) {
        say(`${label} refused — ${error.message}`, true);
        button.disabled = false;
      }
    });
    return form;
  }

  // --- the list ------------------------------------------------------------------------------------

  function versionCell(model, view, role) {
    if (!view) return null;
    return el("div", {},
      pageLink(`v${view.version}`, versionPath(model.name, view.version)), " ",
      view.stage ? badge(view.stage, "stage") : null,
      el("div", {}, `holdout F1 ${fmt(view.holdout.f1)}`,
        view.holdout.roc_auc !== null ? ` · ROC-AUC ${fmt(view.holdout.roc_auc)}` : ""),
      role === "challenger" && view.championF1AtValidation !== null
        ? el("div", { class: "muted" }, `champion F1 then ${fmt(view.championF1AtValidation)}`) : null,
      view.status ? el("div", {}, badge(view.status)) : null,
      prunedBadge(view),
      view.reason ? el("span", { class: "reason", text: view.reason }) : null,
      view.dataVersion ? el("div", { class: "muted" }, `data up to ${view.dataVersion.split("/").pop()}`) : null,
      role === "champion" && view.promotedAt
        ? el("div", { class: "muted" }, `promoted ${view.promotedAt} by ${view.promotedBy || "?"}`) : null,
      el("div", {}, outLink("MLflow version", view.links.mlflowVersion, "new"), " · ",
        outLink("MLflow run", view.links.mlflowRun, "new"), " · ",
        outLink("Airflow run", view.links.airflowRun, "top")),
    );
  }

  // Retention removed (or is removing) the version's artifacts: it stays listed, it can no longer serve.
  function prunedBadge(view) {
    if (!view.artifacts || view.artifacts === "present") return null;
    return el("div", { class: "pruned-note" }, badge(`artifacts ${view.artifacts}`, "pruned"),
      view.prunedAt ? el("span", { class: "muted", text: ` ${view.prunedAt}` }) : null);
  }

  // One event of the model's history: what, which version (from → to), the champion before → after,
  // who, when, why, and the Airflow run that made it.
  function decisionItem(model, d) {
    const moved = d.fromStage && d.toStage && d.fromStage !== d.toStage ? ` ${d.fromStage} → ${d.toStage}` : "";
    const champion = d.championBefore !== d.championAfter
      ? ` · champion ${d.championBefore ? `v${d.championBefore}` : "none"} → ${d.championAfter ? `v${d.championAfter}` : "none"}`
      : "";
    const versions = (d.versions || []).flatMap((v, i) => [i ? ", " : "", pageLink(`v${v}`, versionPath(model.name, v))]);
    return el("li", { "data-event": d.seq, "data-type": d.type },
      d.version ? pageLink(`v${d.version}`, versionPath(model.name, d.version)) : null, ...versions, " ",
      badge(d.decision, d.decision.split(" ")[0]), moved, champion,
      d.changed === false && d.type !== "approval"
        ? el("span", { class: "muted", text: " (already in effect)" }) : null,
      d.override ? el("span", { class: "muted", text: ` (overriding a ${String(d.override.of).replace("_", " ")} approval)` }) : null,
      d.status && d.status !== "done" ? el("span", { class: "muted", text: ` [${String(d.status).replace("_", " ")}]` }) : null,
      el("div", { class: "muted" }, `by ${d.by || "?"} at ${when(d.recordedAt || d.at)}`,
        d.links.airflowRun ? " · " : "", d.links.airflowRun ? outLink("Airflow run", d.links.airflowRun, "top") : null),
      d.reason ? el("span", { class: "reason", text: d.reason }) : null,
    );
  }

  function decisionsCell(model) {
    const items = model.decisions.map((d) => decisionItem(model, d));
    return items.length ? el("ul", { class: "plain" }, items) : dash();
  }

  function driftCell(drift) {
    if (!drift) return dash();
    if (drift.status === "none") {
      return el("span", { class: "muted", text: `not measured for v${drift.version} (no champion to compare with)` });
    }
    return el("div", {},
      badge(drift.status), ` max PSI ${fmt(drift.maxPsi, 3)}`,
      el("div", { class: "muted" }, `v${drift.version}`,
        drift.threshold !== null ? ` · threshold ${fmt(drift.threshold, 2)}` : ""),
      drift.features.length ? el("span", { class: "reason", text: `drifted: ${drift.features.join(", ")}` }) : null,
    );
  }

  function approvalForm(model, approval) {
    const comment = el("input", {
      name: "comment", required: true, minlength: 3, maxlength: 2000,
      placeholder: "Comment (kept on the version)", "aria-label": `Comment on v${approval.version}`,
    });
    const buttons = ["Approve", "Reject"].map((option) => el("button", {
      type: "submit", value: option, "data-action": option.toLowerCase(),
      class: option === "Reject" ? "secondary" : null,
    }, option));
    const form = el("form", { class: "action" }, comment, buttons);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!form.reportValidity()) return;
      const option = event.submitter ? event.submitter.value : "Approve";
      buttons.forEach((b) => { b.disabled = true; });
      try {
        await answerApproval(approval, option, comment.value.trim());
        following.add(approval.runId);
        refreshes = 0;
        say(`${option} v${approval.version} of ${model.name}: answered; the run records it and ` +
          `${option === "Approve" ? "promotes" : "archives"} the version.`);
        await route();
      } catch (error) {
        say(`${option} v${approval.version} refused — ${error.message}`, true);
        buttons.forEach((b) => { b.disabled = false; });
      }
    });
    return form;
  }

  function approvalItem(model, a) {
    const airflow = a.airflow;
    const answered = airflow && airflow.answered;
    return el("li", { "data-approval": a.version },
      pageLink(`v${a.version}`, versionPath(model.name, a.version)), " ",
      answered ? badge("answered", "ok") : badge("pending", "warn"),
      a.holdoutF1 !== null ? ` holdout F1 ${fmt(a.holdoutF1)}` : "",
      a.championF1 !== null ? ` (champion ${fmt(a.championF1)})` : "",
      a.reason ? el("span", { class: "reason", text: a.reason }) : null,
      el("div", { class: "muted" }, `asked ${when(a.requestedAt)} by `,
        outLink(a.runId || a.requestedBy || "?", a.links.airflowRun, "top")),
      a.expiresAt
        ? el("div", { class: "muted", text: `answer by ${when(a.expiresAt)} (${a.timeoutHours} h; no answer = Reject)` })
        : null,
      el("div", { class: "muted", text: `approvers: ${a.approvers.length ? a.approvers.join(", ") : "anyone who may act on the DAG"}` }),
      answered
        ? el("div", {}, `${airflow.chosen.join(", ")} by ${airflow.respondedBy || "?"} at ${when(airflow.respondedAt)}` +
          " — the run is recording it")
        : null,
      airflow && !answered && airflow.taskState !== "awaiting_input" && airflow.taskState !== "deferred"
        ? el("div", { class: "gap", text: `the approval step is ${airflow.taskState || "gone"}: nothing to answer` })
        : null,
      el("div", {}, outLink("Review in Airflow", a.links.requiredActions, "top")),
      a.canAnswer ? approvalForm(model, a) : null,
    );
  }

  function approvalsCell(model) {
    if (!model.pendingApprovals.length) return el("span", { class: "muted", text: "none pending" });
    return el("ul", { class: "plain" }, model.pendingApprovals.map((a) => approvalItem(model, a)));
  }

  function runsList(model) {
    if (!model.spec) return null;
    return el("div", { class: "runs" },
      el("div", {}, "training: ", outLink(model.spec.trainingDagId, model.spec.trainingDagUrl, "top")),
      el("ul", { class: "plain" }, (model.trainingRuns || []).slice(0, 3).map((run) => el("li", {},
        badge(run.state), " ", outLink(run.runAfter ? run.runAfter.slice(0, 19) : run.runId, run.url, "top")))),
      el("div", {}, "scoring: ", outLink(model.spec.scoringDagId, model.spec.scoringDagUrl, "top")),
    );
  }

  function actionsCell(model) {
    const forms = [];
    const champion = model.champion ? model.champion.version : null;
    const candidate = model.challenger || model.lastCandidate;
    // A version waiting for a person's approval is answered there, not promoted around it.
    const form = candidate ? promoteForm(model.name, candidate, model.permissions, champion ? Number(champion) : null) : null;
    if (form) forms.push(form);
    // The API records the promotion of a former champion as a rollback.
    if (model.permissions.rollback && model.previousChampion && champion) {
      forms.push(actionForm(`Roll back to v${model.previousChampion}`,
        (reason) => promote(model.name, model.previousChampion, reason, Number(champion), false),
        "rollback"));
    }
    return forms.length ? el("div", {}, forms) : dash();
  }

  function modelRow(model) {
    const spec = model.spec;
    return el("tr", { "data-model": model.name },
      el("td", { class: "model" },
        el("strong", {}, spec ? spec.name : model.name),
        el("div", { class: "muted" }, `registered model ${model.name}`),
        el("div", {}, outLink("MLflow model", model.links.mlflowModel, "new")),
        runsList(model),
      ),
      el("td", { "data-col": "champion" },
        versionCell(model, model.champion, "champion") ||
          el("span", { class: "muted", text: model.registered ? "no champion" : "not trained yet" })),
      el("td", { "data-col": "challenger" },
        versionCell(model, model.challenger, "challenger") ||
          (model.lastCandidate
            ? el("div", {}, el("div", { class: "muted", text: "no challenger; last candidate:" }),
              versionCell(model, model.lastCandidate, "challenger"))
            : dash())),
      el("td", { "data-col": "decisions" }, decisionsCell(model)),
      el("td", { "data-col": "drift" }, driftCell(model.drift)),
      el("td", { "data-col": "approvals" }, approvalsCell(model)),
      el("td", { "data-col": "actions" }, actionsCell(model)),
    );
  }

  async function showList() {
    document.getElementById("title").textContent = "Models";
    document.getElementById("crumbs").replaceChildren();
    const data = await api("/models");
    const head = ["Model", "Champion", "Challenger", "Last decisions", "Drift", "Pending approvals", "Actions"];
    main.replaceChildren(
      el("table", { id: "models" },
        el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, data.models.map(modelRow))),
      el("p", { class: "muted", text: "Last decisions: the newest events of each model's history in MLflow " +
        "(experiment <model>__history), newest first." }),
      el("p", { class: "muted" }, "MLflow UI: ", outLink(data.mlflowUiUrl, data.mlflowUiUrl, "new")),
    );
    followRuns(data.models);
  }

  // Refresh the list while a run answered from this page has not finished (at most ~3 minutes).
  function followRuns(models) {
    const active = new Set(["queued", "running"]);
    for (const runId of [...following]) {
      const run = models.flatMap((m) => m.trainingRuns || []).find((r) => r.runId === runId);
      const waiting = models.some((m) => m.pendingApprovals.some((a) => a.runId === runId));
      if (!waiting && run && !active.has(run.state)) {
        following.delete(runId);
        say(`Run ${runId} finished: ${run.state}.`);
      }
    }
    if (following.size && refreshes < 60) {
      refreshes += 1;
      refreshTimer = window.setTimeout(route, 3000);
    }
  }

  // --- one version ---------------------------------------------------------------------------------

  function facts(pairs) {
    return el("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
      .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  }

  function metricsTable(record) {
    const challenger = record.challenger_metrics || {};
    const champion = record.champion_metrics || {};
    const names = Object.keys(challenger).sort();
    return el("table", { id: "decision-metrics" },
      el("thead", {}, el("tr", {}, ["holdout metric", `challenger v${record.challenger_version}`,
        record.champion_version ? `champion v${record.champion_version}` : "champion"]
        .map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, names.map((m) => el("tr", {},
        el("td", { text: m }), el("td", { text: fmt(challenger[m]) }), el("td", { text: fmt(champion[m]) })))),
    );
  }

  function outcomesSection(o) {
    if (!o) return el("p", { class: "muted", text: "Not measured (the spec has no outcomes section, or nothing has matured yet)." });
    const w = o.window || {};
    const cols = ["day", "predictions", "alerts", "precision", "recall", "f1", "failures_caught", "failures_missed",
      "lead_time_hours_median"];
    return el("div", { id: "version-outcomes" },
      facts([
        [`Over the newest ${o.windowDays} matured days`, o.window
          ? `F1 ${fmt(w.f1, 3)} · precision ${fmt(w.precision, 3)} · recall ${fmt(w.recall, 3)} · ` +
            `${w.failures_caught} caught, ${w.failures_missed} missed · ${w.alerts} alerts` : null],
        ["Outcomes known until", o.knownUntil],
        ["Predictions not matured yet", o.pending],
      ]),
      el("table", {},
        el("thead", {}, el("tr", {}, cols.map((c) => el("th", { scope: "col", text: c.replace(/_/g, " ") })))),
        el("tbody", {}, o.days.slice().reverse().map((d) => el("tr", {}, cols.map((c) =>
          el("td", { text: typeof d[c] === "number" && !Number.isInteger(d[c]) ? fmt(d[c], 3) : String(d[c] ?? "—") })))))),
    );
  }

  async function showVersion(name, version) {
    document.getElementById("title").textContent = `${name} v${version}`;
    document.getElementById("crumbs").replaceChildren(pageLink("Models", "/models/"), " › ", name);
    const v = await api(versionPath(name, version));
    const record = v.decisionRecord;
    const drift = v.drift;
    const sections = [
      facts([
        ["Stage", badge(v.stage, "stage")],
        ["Aliases", v.aliases.length ? v.aliases.join(", ") : "none"],
        ["Champion now", v.champion ? `v${v.champion}` : "none"],
        ["Validation", v.status ? badge(v.status) : "not validated"],
        ["Approval", v.approvalStatus ? badge(v.approvalStatus, v.approvalStatus === "pending" ? "warn" : null) : null],
        ["Artifacts", v.artifacts === "present" ? "present"
          : el("span", { id: "artifacts-pruned" }, badge(`artifacts ${v.artifacts}`, "pruned"),
            ` by retention${v.prunedAt ? ` at ${v.prunedAt}` : ""}${v.prunedBy ? ` (${v.prunedBy})` : ""}; ` +
            "the version, its tags, metrics and history stay; it can no longer be loaded or promoted")],
        ["Last event", v.history.length ? `${v.history[0].decision} by ${v.history[0].by || "?"}: ${v.history[0].reason}` : null],
        ["Data version", v.dataVersion],
        ["Data digest", v.dataDigest],
        ["Estimator", v.estimator],
        ["Tuning", v.tuning ? `${v.tuning.trials} trials (${v.tuning.states || ""}); best validation ` +
          `${v.tuning.metric} ${fmt(v.tuning.bestValue, 4)} (trial ${v.tuning.bestSlot})` : null],
        ["Decision threshold", v.decisionThreshold !== null && v.decisionThreshold !== undefined
          ? fmt(v.decisionThreshold) : "0.5 (chosen before thresholds existed)"],
        ["Promoted", v.promotedAt ? `${v.promotedAt} by ${v.promotedBy || "?"}: ${v.promotionReason || ""}` : null],
        ["Drift", drift && drift.status === "none" ? "not measured (no champion to compare with)"
          : drift ? `${drift.status}, max PSI ${fmt(drift.maxPsi, 3)}${drift.features.length
            ? `; drifted: ${drift.features.join(", ")}` : ""}` : null],
        ["Links", el("span", {}, outLink("MLflow version", v.links.mlflowVersion, "new"), " · ",
          outLink("MLflow run", v.links.mlflowRun, "new"), " · ",
          outLink("Airflow run", v.links.airflowRun, "top"))],
      ]),
      el("h2", { text: "Decision record" }),
      record
        ? el("div", { id: "decision-record" },
          facts([
            ["Decision", badge(record.decision, record.decision === "promote" ? "promoted" : "rejected")],
            ["Reason", record.reason],
            ["Policy", record.thresholds ? `${record.thresholds.metric} ≥ ${record.thresholds.threshold}, ` +
              `+${record.thresholds.min_improvement} over the champion` : null],
            ["Holdout rows", record.holdout_rows],
          ]),
          metricsTable(record),
          el("details", {}, el("summary", { text: "validation/decision.json" }),
            el("pre", { text: JSON.stringify(record, null, 2) })))
        : el("p", { class: "muted", text: "No decision record (this version was not validated)." }),
      el("h2", { text: "Realized outcomes" }),
      outcomesSection(v.outcomes),
      el("h2", { text: "Model card" }),
      // Shown as the Markdown text it is, through textContent: a column name or category in the
      // card (user data) can never become markup.
      v.modelCard
        ? el("pre", { id: "model-card", class: "model-card", text: v.modelCard })
        : el("p", { class: "muted", text: "No model card (a version from before model cards)." }),
      el("h2", { text: "History" }),
      v.history.length
        ? el("ul", { class: "plain", id: "version-history" }, v.history.map((d) => decisionItem({ name }, d)))
        : el("p", { class: "muted", text: "No events about this version yet." }),
      el("h2", { text: "Plots" }),
      v.plots.length
        ? el("div", { class: "plots" }, v.plots.map((plot) => el("figure", {},
          el("img", { src: `${API}${versionPath(name, version)}/plots/${encodeURIComponent(plot)}`, alt: plot }),
          el("figcaption", { text: plot }))))
        : el("p", { class: "muted", text: v.artifacts === "present" ? "No plots." : "No plots (artifacts pruned)." }),
    ];
    const form = promoteForm(name, v, v.permissions, v.champion ? Number(v.champion) : null);
    if (form) sections.push(el("h2", { text: "Actions" }), form);
    main.replaceChildren(...sections);
  }

  // --- routing -------------------------------------------------------------------------------------

  async function route() {
    window.clearTimeout(refreshTimer);
    const path = decodeURIComponent(window.location.pathname.slice(UI.length));
    const match = /^\/models\/([^/]+)\/versions\/([0-9]+)$/.exec(path);
    try {
      if (match) await showVersion(match[1], match[2]);
      else await showList();
      if (!statusLine.classList.contains("error") && statusLine.textContent === "Loading…") say("");
    } catch (error) {
      say(`Could not load: ${error.message}`, true);
    }
  }

  route();
})();
