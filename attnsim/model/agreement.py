"""How far two computations of the same unit may differ when the model's own arithmetic differs.

attnsim's own reductions give the same bytes for a window whatever the batch size and thread count
(windows are padded to fixed lengths; sums are rounded once). The model's GEMMs and softmax are not
attnsim's: another device type, torch or transformers version (or BLAS) rounds differently. Between
two such environments, these tolerances hold for float32 weights (docs/design.md, Determinism):

- `topk_value`: at every rank, within one float16 step of each other (the stored precision);
- `topk_index`: the same neighbour sets, except near ties: a neighbour in one set and not the other
  scores within one float16 step of the k-th value of its row (a swap across the cut-off);
- `attention_mass`: within 1e-6 for the probability categories, 1e-5 for the entropy (nats, up to
  log T);
- `head_vectors` and `similarity`: within one float16 step of the row's largest magnitude (a head
  vector's, or S's row over `other`): small components carry the absolute error of large ones.

Example::

    problems = disagreements(unit_a, unit_b)
    assert not problems, problems
"""

from __future__ import annotations

import numpy as np

MASS_TOLERANCE = 1e-6
ENTROPY_TOLERANCE = 1e-5


def disagreements(a: dict[str, np.ndarray], b: dict[str, np.ndarray], float16_steps: float = 1.0) -> list[str]:
    """What in unit arrays `b` falls outside the tolerances against `a` (empty: they agree)."""
    out = []
    if "topk_value" in a:
        out += _within_float16("topk_value", a["topk_value"], b["topk_value"], float16_steps, per_row=False)
    for name in ("head_vectors", "similarity"):
        if name in a:
            out += _within_float16(name, a[name], b[name], float16_steps, per_row=True)
    if "topk_index" in a:
        out += _same_neighbours(a, b, float16_steps)
    if "attention_mass" in a:
        gap = np.abs(a["attention_mass"].astype(np.float64) - b["attention_mass"])  # (W, L, H, C)
        if np.isnan(gap).any() and not np.array_equal(np.isnan(a["attention_mass"]), np.isnan(b["attention_mass"])):
            out.append("attention_mass: NaN at different places")
        probability, entropy = np.nan_to_num(gap[..., :-1]), np.nan_to_num(gap[..., -1])
        if probability.max(initial=0) > MASS_TOLERANCE:
            out.append(f"attention_mass: gap {probability.max():.2e} > {MASS_TOLERANCE:.0e}")
        if entropy.max(initial=0) > ENTROPY_TOLERANCE:
            out.append(f"attention_mass entropy: gap {entropy.max():.2e} > {ENTROPY_TOLERANCE:.0e}")
    return out


def float16_step(x: np.ndarray) -> np.ndarray:
    """The spacing of float16 numbers at |x|: one unit of the stored precision."""
    return np.spacing(np.abs(x).astype(np.float16)).astype(np.float64)


def _within_float16(name: str, a: np.ndarray, b: np.ndarray, steps: float, per_row: bool) -> list[str]:
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return [f"{name}: NaN (padding or missing) at different places"]
    x, y = np.nan_to_num(a.astype(np.float64)), np.nan_to_num(b.astype(np.float64))
    scale = np.maximum(np.abs(x), np.abs(y))
    if per_row:
        scale = scale.max(-1, keepdims=True)
    allowed = steps * float16_step(scale)
    bad = np.abs(x - y) > allowed
    return [f"{name}: {int(bad.sum())} values differ by more than {steps:g} float16 step(s)"] if bad.any() else []


def _same_neighbours(a: dict, b: dict, steps: float) -> list[str]:
    """Neighbour sets per row equal up to swaps across the cut-off among near-ties."""
    ia, ib = a["topk_index"], b["topk_index"]  # (W, L, H, T, k), -1 where no neighbour
    if not np.array_equal(ia < 0, ib < 0):
        return ["topk_index: missing neighbours at different places"]
    va, vb = a["topk_value"].astype(np.float64), b["topk_value"].astype(np.float64)
    differs = np.flatnonzero((np.sort(ia, -1) != np.sort(ib, -1)).any(-1))
    bad = 0
    for row in differs:  # few rows: a loop reads best
        ra, rb = ia.reshape(-1, ia.shape[-1])[row], ib.reshape(-1, ib.shape[-1])[row]
        for index, values, other in ((ra, va, rb), (rb, vb, ra)):
            vals = values.reshape(-1, values.shape[-1])[row]
            real = index >= 0
            kth = vals[real][-1]  # the row's smallest kept value: the cut-off
            only_here = real & ~np.isin(index, other)
            if (np.abs(vals[only_here] - kth) > steps * float16_step(np.array([kth]))[0]).any():
                bad += 1
                break
    return [f"topk_index: {bad} rows differ in more than a near tie at the cut-off"] if bad else []
