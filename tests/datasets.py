"""A foreign-schema dataset the tests build themselves, modelled on the public AI4I 2020 dataset.

AI4I 2020 ("Predictive Maintenance Dataset", UCI) is what a new user brings: an id column, a product
id string, a quality category L/M/H, five sensor columns whose names carry units in brackets, and a
rare failure label. Nothing is downloaded: :func:`ai4i_like` draws a look-alike with the same columns,
the same failure mechanisms (heat dissipation, power, overstrain, tool wear, random) and about 3 %
positives, so a pipeline that only knows its own synthetic schema fails on it the way it would on
the real file.

The helpers craft the scoring and training batches the end-to-end tests need: an unseen category,
a changed schema, a drifted population. On ``sys.path`` through pytest's ``pythonpath``
(pyproject.toml): ``from datasets import ai4i_like``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

TARGET = "Machine failure"
ID_COLUMNS = ("UDI", "Product ID")
CATEGORICAL = ("Type",)
NUMERIC = ("Air temperature [K]", "Process temperature [K]", "Torque [Nm]")
INTEGER = ("Rotational speed [rpm]", "Tool wear [min]")
SENSORS = (
    "Air temperature [K]",
    "Process temperature [K]",
    "Rotational speed [rpm]",
    "Torque [Nm]",
    "Tool wear [min]",
)
COLUMNS = ("UDI", "Product ID", "Type", *SENSORS, TARGET)

TYPES = ("L", "M", "H")
TYPE_SHARES = (0.6, 0.3, 0.1)
# Overstrain limit of tool wear x torque [min Nm] per product quality: better products take more.
_OVERSTRAIN_LIMIT = {"L": 12_500.0, "M": 13_000.0, "H": 13_500.0}


def ai4i_like(
    n_rows: int = 10_000,
    seed: int = 0,
    *,
    labels: Sequence[Any] = ("no", "yes"),
    type_shares: Sequence[float] = TYPE_SHARES,
    torque_shift: float = 0.0,
    failure_modes: bool = False,
) -> pd.DataFrame:
    """``n_rows`` AI4I-like machine readings with a ``Machine failure`` column of ``labels`` (negative,
    positive), about 3 % positive.

    A machine fails when one of the AI4I mechanisms fires: heat dissipation (air/process temperature
    gap under 8.6 K at under 1,380 rpm), power (torque x angular speed outside 1.7-8.6 kW), overstrain
    (tool wear x torque over a per-Type limit), tool wear (a random share of tools in their last
    200-240 minutes) and random failures (0.3 %); a few failures of the deterministic mechanisms are
    missed. Hence learnable from the sensors, but no model is perfect. ``type_shares`` and
    ``torque_shift`` (Nm) move the population for drift tests; the mechanisms stay the same.

    ``failure_modes`` adds the real file's failure-mode flags before the label, 0/1 per row: ``TWF``
    (tool wear), ``HDF`` (heat dissipation), ``PWF`` (power), ``OSF`` (overstrain), ``RNF`` (random),
    with quirks like the real file's: a few failures carry no flag, and ~0.2 % of rows have ``RNF``
    set without a failure (the real RNF is mostly noise too). Each flag alone is a weak predictor;
    together they *are* the label (what the leakage guard must catch). The other columns keep the
    values they have without the flags.
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be positive, got {n_rows}")
    negative, positive = labels
    rng = np.random.default_rng(seed)
    n = n_rows
    shares = np.asarray(type_shares, dtype=float)
    kind = rng.choice(len(TYPES), size=n, p=shares / shares.sum())
    types = np.asarray(TYPES, dtype=object)[kind]

    # Air temperature: a slow daily swing around 300 K with noise (AI4I: a normalised random walk, sd 2 K).
    t = np.arange(n)
    air = 300.0 + 1.0 * np.sin(2 * np.pi * t / 1440.0 + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.6, n)
    process = air + 10.0 + rng.normal(0.0, 1.0, n)
    # Speed is right-skewed around 1,540 rpm; torque falls as speed rises (AI4I: correlation -0.88).
    z_speed = (rng.gamma(4.0, 1.0, n) - 4.0) / 2.0
    speed = np.clip(np.rint(1540.0 + 180.0 * z_speed), 1168, 2886).astype(np.int64)
    z_speed = (speed - 1540.0) / 180.0
    torque = 40.0 - 8.8 * z_speed + rng.normal(0.0, 4.7, n) + torque_shift
    torque = np.round(np.clip(torque, 3.8, 76.6 + max(torque_shift, 0.0)), 1)
    wear = rng.integers(0, 254, n).astype(np.int64)

    air, process = np.round(air, 1), np.round(process, 1)
    heat = (process - air < 8.6) & (speed < 1380)
    power_w = torque * speed * 2.0 * np.pi / 60.0
    power = (power_w < 1700.0) | (power_w > 8600.0)
    limit = np.vectorize(_OVERSTRAIN_LIMIT.__getitem__, otypes=[float])(np.asarray(TYPES))[kind]
    overstrain = wear * torque > limit
    tool = (wear >= 200) & (wear <= 240) & (rng.random(n) < 0.02)
    mechanical = (heat | power | overstrain) & (rng.random(n) >= 0.02)
    random_failure = rng.random(n) < 0.001
    failed = mechanical | tool | random_failure

    serial = rng.permutation(n) + 10_000
    product_id = np.char.add(types.astype(str), serial.astype(str)).astype(object)
    label = np.where(failed, positive, negative)
    if label.dtype.kind == "U":
        label = label.astype(object)
    modes: dict[str, np.ndarray] = {}
    if failure_modes:  # drawn after everything else, so the other columns keep their values
        silent = rng.random(n) < 0.5  # half the random failures carry no flag (unexplained failures)
        spurious = rng.random(n) < 0.002  # RNF set without a failure
        modes = {
            "TWF": tool,
            "HDF": heat & mechanical,
            "PWF": power & mechanical,
            "OSF": overstrain & mechanical,
            "RNF": (random_failure & ~silent) | (spurious & ~failed),
        }
        modes = {name: flag.astype(np.int64) for name, flag in modes.items()}
    return pd.DataFrame(
        {
            "UDI": np.arange(1, n + 1, dtype=np.int64),
            "Product ID": product_id,
            "Type": types,
            "Air temperature [K]": air,
            "Process temperature [K]": process,
            "Rotational speed [rpm]": speed,
            "Torque [Nm]": torque,
            "Tool wear [min]": wear,
            **modes,
            TARGET: label,
        }
    )


def ai4i_drifted(
    n_rows: int = 2_000, seed: int = 1, *, labels: Sequence[Any] = ("no", "yes")
) -> pd.DataFrame:
    """A batch from a moved population: torque up 8 Nm and mostly high-quality products (H 50 %)
    — well above a PSI of 0.25 on both ``Torque [Nm]`` and ``Type``."""
    return ai4i_like(n_rows, seed, labels=labels, type_shares=(0.2, 0.3, 0.5), torque_shift=8.0)


def with_label_copy(
    frame: pd.DataFrame,
    column: str,
    *,
    values: tuple[Any, Any] = ("ok", "alarm"),
    flip: float = 0.03,
    seed: int = 0,
    positive: Any = "yes",
) -> pd.DataFrame:
    """A copy of ``frame`` with ``column`` (placed before the label) holding ``values`` (negative,
    positive) as a noisy copy of ``Machine failure``: ``flip`` of the rows say the other value."""
    rng = np.random.default_rng(seed)
    failed = (frame[TARGET] == positive).to_numpy()
    said = failed ^ (rng.random(len(frame)) < flip)
    out = frame.copy()
    out.insert(out.columns.get_loc(TARGET), column, np.where(said, values[1], values[0]))
    return out


def with_unseen_category(
    frame: pd.DataFrame, column: str = "Type", value: str = "X", rows: int | Collection[int] = 10
) -> pd.DataFrame:
    """A copy of ``frame`` whose ``column`` is ``value`` in ``rows`` (the first ``rows`` positions,
    or those positions) — a category the model never saw."""
    positions = np.arange(rows) if isinstance(rows, int) else np.asarray(sorted(rows))
    out = frame.copy()
    out.iloc[positions, out.columns.get_loc(column)] = value
    return out


def with_schema_change(
    frame: pd.DataFrame,
    *,
    rename: Mapping[str, str] | None = None,
    add: Collection[str] = (),
    retype: Collection[str] = (),
) -> pd.DataFrame:
    """A copy of ``frame`` with columns renamed, added (float readings) or retyped (numbers as text,
    ``"1551 units"``, which stays text through a CSV): each a schema change a contract must catch."""
    out = frame.rename(columns=dict(rename or {}))
    rng = np.random.default_rng(len(out))
    for column in add:
        out[column] = np.round(rng.normal(50.0, 10.0, len(out)), 1)
    for column in retype:
        out[column] = out[column].astype(str) + " units"
    return out
