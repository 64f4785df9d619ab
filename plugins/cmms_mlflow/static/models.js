// The Models page (cmms_mlflow.ui): reads and acts only through the model API (/api/v1/ml) with
// the user's Airflow session cookie. Every value reaches the page as text (textContent or an
// attribute set through the DOM, never innerHTML): model names, column names and reasons are
// user data. Links go only to http(s) URLs or paths on this origin.
"use strict";

(() => {
  const ROOT = new URL(document.currentScript.src).pathname.replace(/\/cmms-ui\/static\/models\.js$/, "");
  const API = `${ROOT}/api/v1/ml`;
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

  // A link out of the page: "top" replaces Airflow's page (an Airflow run), "new" opens a tab
  // (MLflow). Airflow frames this page in a sandbox without top navigation or popups, so the
  // click is replayed on a link in Airflow's own (same-origin) document.
  function outLink(text, url, where) {
    const href = safeHref(url);
    if (href === null) return el("span", { class: "muted", text: "—" });
    return el("a", { href, "data-out": where, rel: where === "new" ? "noopener noreferrer" : null }, text);
  }

  function pageLink(text, path) {
    return el("a", { href: `${UI}${path}` }, text);
  }

  document.addEventListener("click", (event) => {
    const link = event.target instanceof Element ? event.target.closest("a[data-out]") : null;
    if (link === null || window.top === window) return;
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

  async function api(path, options) {
    const response = await fetch(`${API}${path}`, {
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

  const modelPath = (name) => `/models/${encodeURIComponent(name)}`;
  const versionPath = (name, version) => `${modelPath(name)}/versions/${encodeURIComponent(version)}`;

  function promote(name, version, reason, expectedChampion) {
    return api(`${versionPath(name, version)}/promote`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ stage: "Production", reason, expectedChampion }),
    });
  }

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
      view.reason ? el("span", { class: "reason", text: view.reason }) : null,
      view.dataVersion ? el("div", { class: "muted" }, `data up to ${view.dataVersion.split("/").pop()}`) : null,
      role === "champion" && view.promotedAt
        ? el("div", { class: "muted" }, `promoted ${view.promotedAt} by ${view.promotedBy || "?"}`) : null,
      el("div", {}, outLink("MLflow version", view.links.mlflowVersion, "new"), " · ",
        outLink("MLflow run", view.links.mlflowRun, "new"), " · ",
        outLink("Airflow run", view.links.airflowRun, "top")),
    );
  }

  function decisionsCell(model) {
    const items = model.decisions.map((d) => el("li", {},
      pageLink(`v${d.version}`, versionPath(model.name, d.version)), " ", badge(d.decision.split(" ")[0]),
      ` ${d.decision === d.decision.split(" ")[0] ? "" : d.decision.split(" ").slice(1).join(" ")} `,
      el("span", { class: "muted", text: d.at || "" }),
      d.reason ? el("span", { class: "reason", text: d.reason }) : null,
    ));
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

  function approvalsCell(model) {
    if (model.pendingApprovals === null) {
      return el("span", { class: "gap", text: "approvals not available yet" });
    }
    if (!model.pendingApprovals.length) return el("span", { class: "muted", text: "none pending" });
    return el("ul", { class: "plain" }, model.pendingApprovals.map((a) => el("li", {},
      `v${a.version} `, el("span", { class: "reason", text: a.reason || "" }),
      model.permissions.approve ? outLink("Review in Airflow", a.url, "top") : null,
    )));
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
    if (model.permissions.promote && candidate && candidate.stage !== "Production") {
      forms.push(actionForm(`Promote v${candidate.version}`,
        (reason) => promote(model.name, candidate.version, reason, champion ? Number(champion) : null),
        "promote"));
    }
    if (model.permissions.rollback && model.previousChampion && champion) {
      forms.push(actionForm(`Roll back to v${model.previousChampion}`,
        (reason) => promote(model.name, model.previousChampion, `rollback: ${reason}`, Number(champion)),
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
      el("p", { class: "gap", text: "Decisions are read from the versions' tags (the latest per version): " +
        "the model's full history is not available yet." }),
      el("p", { class: "muted" }, "MLflow UI: ", outLink(data.mlflowUiUrl, data.mlflowUiUrl, "new")),
    );
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
        ["Decision", v.decision ? `${v.decision.decision}: ${v.decision.reason}` : null],
        ["Data version", v.dataVersion],
        ["Data digest", v.dataDigest],
        ["Estimator", v.estimator],
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
      el("h2", { text: "Plots" }),
      v.plots.length
        ? el("div", { class: "plots" }, v.plots.map((plot) => el("figure", {},
          el("img", { src: `${API}${versionPath(name, version)}/plots/${encodeURIComponent(plot)}`, alt: plot }),
          el("figcaption", { text: plot }))))
        : el("p", { class: "muted", text: "No plots." }),
    ];
    if (v.permissions.promote && v.stage !== "Production") {
      sections.push(el("h2", { text: "Actions" }), actionForm(`Promote v${version}`,
        (reason) => promote(name, version, reason, v.champion ? Number(v.champion) : null), "promote"));
    }
    main.replaceChildren(...sections);
  }

  // --- routing -------------------------------------------------------------------------------------

  async function route() {
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
