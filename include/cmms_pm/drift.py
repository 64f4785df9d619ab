"""Drift of a new batch against the champion's training data, measured through its data contract.

Each feature gets a population stability index (PSI) over the contract's buckets: the training
deciles (plus missing) for numbers, the training categories (plus one bucket for everything else
and one for missing) for categories. The report says which features drifted past the spec's
threshold and whether the policy only warns or blocks promotion; it renders as a table, a PNG, an
HTML page and model-version tags. Column names are user data: the HTML escapes them, the plot shows
them as plain text.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cmms_pm.contract import (
    ColumnContract,
    DataContract,
    bin_counts,
    category_counts,
    numeric_values,
)
from cmms_pm.exceptions import ContractError

ACTIONS: tuple[str, ...] = ("warn", "block")
STABLE_BELOW = 0.1
"""PSI under this is ``stable``; from it up to the threshold, ``moderate``."""
EPSILON = 1e-4
"""Smallest share a bucket counts with, so an empty bucket on either side gives a finite PSI."""
TAG_LIMIT = 500
"""Longest ``drift_features`` tag value."""

_STATUSES = ("stable", "moderate", "drifted")
_COLOURS = {"stable": "#4c9a5b", "moderate": "#e0a526", "drifted": "#c8423b"}


@dataclass(frozen=True)
class FeatureDrift:
    """The PSI of one feature and its band: ``stable`` < 0.1 ≤ ``moderate`` < threshold ≤ ``drifted``."""

    name: str
    kind: str
    psi: float
    status: str


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift against a threshold, and what the policy does about it (``warn`` or ``block``)."""

    threshold: float
    action: str
    features: tuple[FeatureDrift, ...]

    @property
    def drifted(self) -> list[str]:
        """Features at or above the threshold, highest PSI first."""
        return [feature.name for feature in _ranked(self.features) if feature.psi >= self.threshold]

    @property
    def max_psi(self) -> float:
        return max((feature.psi for feature in self.features), default=0.0)

    @property
    def status(self) -> str:
        """``ok`` when nothing drifted, else the policy's action: ``warn`` or ``block``."""
        return self.action if self.drifted else "ok"

    def reason(self) -> str:
        """One sentence for logs and the decision record, naming the drifted features and their PSI."""
        limit = f"PSI {self.threshold:g}"
        if not self.features:
            return f"no feature could be compared with the training data; policy: {self.action}"
        ranked = _ranked(self.features)
        drifted = [feature for feature in ranked if feature.psi >= self.threshold]
        if not drifted:
            top = ranked[0]
            return (
                f"no feature drifted above {limit} (highest {top.psi:.2f} in {top.name!r}); "
                f"policy: {self.action}"
            )
        shown = ", ".join(f"{feature.name!r} ({feature.psi:.2f})" for feature in drifted[:10])
        if len(drifted) > 10:
            shown += f" and {len(drifted) - 10} more"
        noun = "feature" if len(drifted) == 1 else "features"
        return f"drift above {limit} in {len(drifted)} {noun}: {shown}; policy: {self.action}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "action": self.action,
            "status": self.status,
            "max_psi": self.max_psi,
            "drifted": self.drifted,
            "features": [
                {"name": f.name, "kind": f.kind, "psi": f.psi, "status": f.status} for f in self.features
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        """Rebuild a report from :meth:`to_dict` output (derived fields are recomputed, not read)."""
        try:
            threshold, action = float(data["threshold"]), str(data["action"])
            features = tuple(
                FeatureDrift(
                    name=str(item["name"]),
                    kind=str(item["kind"]),
                    psi=float(item["psi"]),
                    status=str(item["status"]),
                )
                for item in data["features"]
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ContractError(f"malformed drift report: {err!r}") from err
        _check_policy(threshold, action)
        if any(feature.status not in _STATUSES for feature in features):
            raise ContractError(f"drift report has a feature status outside {list(_STATUSES)}")
        return cls(threshold=threshold, action=action, features=features)


def _ranked(features: tuple[FeatureDrift, ...]) -> list[FeatureDrift]:
    return sorted(features, key=lambda feature: (-feature.psi, feature.name))


def _check_policy(threshold: float, action: str) -> None:
    if not (math.isfinite(threshold) and threshold > 0):
        raise ContractError(f"psi_threshold must be a positive number, got {threshold!r}")
    if action not in ACTIONS:
        raise ContractError(f"drift action must be one of {list(ACTIONS)}, got {action!r}")


def population_stability_index(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two share vectors over the same buckets: sum of (a - e) * ln(a / e), shares ≥ ``EPSILON``."""
    reference = np.maximum(np.asarray(expected, dtype=float), EPSILON)
    observed = np.maximum(np.asarray(actual, dtype=float), EPSILON)
    return float(np.sum((observed - reference) * np.log(observed / reference)))


def bucket_shares(column: ColumnContract, series: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """``(training, batch)`` shares of a feature over the contract's buckets, missing last.

    Numeric: the contract's bins, then missing (a value that is not a number counts as missing).
    Categorical: the contract's categories, then one bucket for every other value (training's
    ``other_share`` against rarer and unseen values), then missing. None when the contract has no
    buckets for the column (no value at all in training).
    """
    rows = len(series)
    if column.categories is not None:
        counts = category_counts(series)
        known = [counts.get(key, 0) for key in column.categories]
        other = sum(count for key, count in counts.items() if key not in column.categories)
        batch = np.array([*known, other, rows - sum(known) - other], dtype=float) / rows
        training = [*column.categories.values(), column.other_share or 0.0, column.missing_rate]
        return np.array(training, dtype=float), batch
    if column.bin_edges is None or column.bin_shares is None:
        return None
    values, _ = numeric_values(series)
    n_nan = int(np.isnan(values).sum())
    bins = bin_counts(values, np.asarray(column.bin_edges, dtype=float), n_nan)
    batch = np.append(bins, n_nan).astype(float) / rows
    return np.array([*column.bin_shares, column.missing_rate], dtype=float), batch


def drift_report(
    frame: pd.DataFrame, contract: DataContract, *, psi_threshold: float, action: str
) -> DriftReport:
    """PSI of every contract feature present in ``frame`` against its training buckets.

    Features absent from the frame are skipped (the contract check reports them as removed).
    """
    _check_policy(psi_threshold, action)
    if len(frame) == 0:
        raise ContractError("cannot measure drift on 0 rows")
    features = []
    for column in contract.columns:
        if not column.feature or column.name not in frame.columns:
            continue
        shares = bucket_shares(column, frame[column.name])
        if shares is None:
            continue
        psi = population_stability_index(*shares)
        features.append(
            FeatureDrift(
                name=column.name,
                kind=column.declared_kind or column.kind,
                psi=psi,
                status=_band(psi, psi_threshold),
            )
        )
    return DriftReport(threshold=psi_threshold, action=action, features=tuple(features))


def _band(psi: float, threshold: float) -> str:
    if psi >= threshold:
        return "drifted"
    return "moderate" if psi >= STABLE_BELOW else "stable"


def drift_table(report: DriftReport) -> pd.DataFrame:
    """One row per feature (feature, kind, psi, status), highest PSI first."""
    ranked = _ranked(report.features)
    return pd.DataFrame(
        {
            "feature": [feature.name for feature in ranked],
            "kind": [feature.kind for feature in ranked],
            "psi": np.array([feature.psi for feature in ranked], dtype=float),
            "status": [feature.status for feature in ranked],
        }
    )


def drift_tags(report: DriftReport) -> dict[str, str]:
    """Model-version tags: status, highest PSI, threshold, action and the drifted features (bounded)."""
    return {
        "drift_status": report.status,
        "drift_max_psi": f"{report.max_psi:.4f}",
        "drift_threshold": f"{report.threshold:g}",
        "drift_action": report.action,
        "drift_features": _bounded_list(report.drifted, TAG_LIMIT),
    }


def _bounded_list(names: list[str], limit: int) -> str:
    """``a,b,c`` or, when longer than ``limit``, as many names as fit then ``,+N more``."""
    joined = ",".join(names)
    if len(joined) <= limit:
        return joined
    for kept in range(len(names) - 1, -1, -1):
        suffix = f"+{len(names) - kept} more"
        text = ",".join([*names[:kept], suffix])
        if len(text) <= limit:
            return text
    return ""  # unreachable: "+N more" alone always fits a limit of 500


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
table {{ border-collapse: collapse; }}
th, td {{ padding: 0.3rem 0.7rem; border-bottom: 1px solid #ddd; text-align: left; }}
td.psi {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.bar {{ width: 320px; }}
.track {{ position: relative; height: 0.9rem; background: #f2f2f2; }}
.fill {{ position: absolute; top: 0; bottom: 0; left: 0; }}
.limit {{ position: absolute; top: -0.2rem; bottom: -0.2rem; border-left: 2px dashed #222; }}
.status-ok {{ color: #4c9a5b; }} .status-warn {{ color: #b57f00; }} .status-block {{ color: #c8423b; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="status-{status}"><strong>{status_text}</strong>: {reason}</p>
<p>Population stability index per feature against the training data recorded in the model's contract;
stable below {stable:g}, drifted at or above the threshold {threshold:g} (dashed line).</p>
<table>
<thead><tr><th>feature</th><th>kind</th><th>PSI</th><th>status</th><th>PSI against threshold</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""


def render_drift_html(report: DriftReport, *, title: str) -> str:
    """A self-contained HTML page (no scripts, every text escaped): reason, table and a bar per feature."""
    escape = html.escape
    scale = max(report.max_psi, report.threshold) * 1.1
    limit = 100.0 * report.threshold / scale
    rows = []
    for feature in _ranked(report.features):
        width = 100.0 * min(feature.psi / scale, 1.0)
        colour = _COLOURS.get(feature.status, "#888888")
        rows.append(
            f"<tr><td>{escape(feature.name)}</td><td>{escape(feature.kind)}</td>"
            f'<td class="psi">{feature.psi:.4f}</td><td>{escape(feature.status)}</td>'
            f'<td class="bar"><div class="track"><div class="fill" style="width: {width:.1f}%; '
            f'background: {colour}"></div><div class="limit" style="left: {limit:.1f}%"></div>'
            "</div></td></tr>"
        )
    if not rows:
        rows.append('<tr><td colspan="5">no feature could be compared with the training data</td></tr>')
    return _PAGE.format(
        title=escape(title),
        status=escape(report.status),
        status_text=escape(report.status.upper()),
        reason=escape(report.reason()),
        stable=STABLE_BELOW,
        threshold=report.threshold,
        rows="\n".join(rows),
    )


def _plain(text: str, width: int = 40) -> str:
    """A column name as matplotlib plain text: ``$`` would start mathtext; long names are shortened."""
    short = text if len(text) <= width else text[: width - 1] + "…"
    return short.replace("$", r"\$")


def plot_drift(report: DriftReport, path: str | os.PathLike[str]) -> str:
    """Horizontal PSI bar per feature (highest on top) with the threshold as a dashed line; a PNG file."""
    from cmms_pm.plots import _figure, _save

    ranked = _ranked(report.features)[::-1]
    figure = _figure(7.5, max(3.0, 0.35 * len(ranked) + 1.5))
    axes = figure.add_subplot()
    if ranked:
        positions = np.arange(len(ranked))
        axes.barh(positions, [f.psi for f in ranked], color=[_COLOURS[f.status] for f in ranked])
        axes.set_yticks(positions, labels=[_plain(f.name) for f in ranked])
        for position, feature in zip(positions, ranked, strict=True):
            axes.text(feature.psi, position, f" {feature.psi:.2f}", va="center", fontsize=8)
    else:
        axes.text(0.5, 0.5, "no feature compared", ha="center", va="center", transform=axes.transAxes)
        axes.set_yticks([])
    limit = f"threshold {report.threshold:g} (policy: {report.action})"
    axes.axvline(report.threshold, linestyle="--", color="#222222", label=limit)
    axes.set_xlim(0.0, max(report.max_psi, report.threshold) * 1.2)
    axes.set_xlabel("population stability index (PSI) against the training data")
    axes.set_title(f"Feature drift: {report.status}")
    axes.legend(loc="lower right")
    return _save(figure, path)
