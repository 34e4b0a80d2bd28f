"""Appendix C: the Prover's two ways to reshape a run, and why neither helps much.

C.1 (Figure 2): c/k chips for k*T days. With f high enough that every sampled run chip holds a
snapshot, p_d(k) = 1 - (1 - b/k)^(k*s) with s(p) = ln(1-p)/ln(1-b) set for k = 1.
C.2 (Theorem 1): more chips for less time t <= T never lowers
p_d(t) = 1 - (1 - (H/(a*C*t))*(1 - e^(-f*t)))^s, by Lemma 1: g*(1 - beta^(1/g)) >= 1 - beta for
g >= 1, beta in (0, 1).
"""

from __future__ import annotations

import numpy as np

from computewatch.analysis.errors import InvalidParameterError
from computewatch.analysis.params import Setting

__all__ = [
    "FIGURE2_B_MAX",
    "FIGURE2_K_MAX",
    "FIGURE2_P",
    "figure2_grid",
    "figure2_worst",
    "lemma1_gap",
    "p_d_longer",
    "p_d_more_chips",
    "samples_for_probability",
]

FIGURE2_P = 0.9
FIGURE2_K_MAX = 100.0
FIGURE2_B_MAX = 0.2


def _check_b(b: np.ndarray) -> None:
    if np.any(~np.isfinite(b)) or np.any((b <= 0) | (b >= 1)):
        raise InvalidParameterError("b must lie strictly between 0 and 1")


def _check_s(s: np.ndarray) -> None:
    if np.any(~np.isfinite(s)) or np.any(s < 0):
        raise InvalidParameterError("s (samples per period) must be a finite number >= 0")


def samples_for_probability(p: float, b: float | np.ndarray) -> np.ndarray:
    """C.1's s(p) = ln(1-p)/ln(1-b), unrounded (the paper's Figure 2 uses it as a real number)."""
    if not (0.0 < p < 1.0):
        raise InvalidParameterError(f"p must lie strictly between 0 and 1, got {p!r}")
    b = np.asarray(b, dtype=float)
    _check_b(b)
    return np.log1p(-p) / np.log1p(-b)


def p_d_longer(k: float | np.ndarray, b: float | np.ndarray, s: float | np.ndarray) -> np.ndarray:
    """C.1: detection probability when the run uses 1/k of the chips for k times as long."""
    k = np.asarray(k, dtype=float)
    b = np.asarray(b, dtype=float)
    if np.any(~np.isfinite(k)) or np.any(k < 1):
        raise InvalidParameterError("k must be >= 1")
    _check_b(b)
    s = np.asarray(s, dtype=float)
    _check_s(s)
    return -np.expm1(k * s * np.log1p(-b / k))


def figure2_grid(
    k: np.ndarray | None = None, b: np.ndarray | None = None, p: float = FIGURE2_P
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Figure 2's surface p_d(k)/p; defaults k in [1, 100], b in (0, 0.2]. Returns (k, b, ratio)
    with ratio[i, j] for b[i], k[j]."""
    k = np.linspace(1.0, FIGURE2_K_MAX, 199) if k is None else np.asarray(k, dtype=float)
    b = np.linspace(FIGURE2_B_MAX / 200, FIGURE2_B_MAX, 200) if b is None else np.asarray(b, dtype=float)
    s = samples_for_probability(p, b)[:, None]
    ratio = p_d_longer(k[None, :], b[:, None], s) / p
    return k, b, ratio


def figure2_worst(p: float = FIGURE2_P) -> dict[str, float]:
    """The smallest p_d(k)/p on Figure 2's grid, with where it occurs."""
    k, b, ratio = figure2_grid(p=p)
    i, j = np.unravel_index(np.argmin(ratio), ratio.shape)
    return {"ratio": float(ratio[i, j]), "b": float(b[i]), "k": float(k[j])}


def lemma1_gap(g: float | np.ndarray, beta: float | np.ndarray) -> np.ndarray:
    """Lemma 1's g*(1 - beta^(1/g)) - (1 - beta), non-negative for g >= 1 and beta in (0, 1)."""
    g = np.asarray(g, dtype=float)
    beta = np.asarray(beta, dtype=float)
    if np.any(~np.isfinite(g)) or np.any(g < 1) or np.any(~((beta > 0) & (beta < 1))):
        raise InvalidParameterError("Lemma 1 needs g >= 1 and beta in (0, 1)")
    return g * -np.expm1(np.log(beta) / g) - (1.0 - beta)


def p_d_more_chips(setting: Setting, s: float, t: float | np.ndarray) -> np.ndarray:
    """C.2: detection probability when H is trained in t <= T days on H/(a*t) chips (one period,
    sampling after the run)."""
    t = np.asarray(t, dtype=float)
    _check_s(np.asarray(s, dtype=float))
    if np.any(~((t > 0) & (t <= setting.T))):
        raise InvalidParameterError(f"t must lie in (0, T = {setting.T:g}]")
    fraction = setting.H / (setting.a * setting.C * t)
    if np.any(fraction > 1):
        raise InvalidParameterError("t is too short: the run would need more chips than the stockpile holds")
    per_sample_hit = fraction * -np.expm1(-setting.f * t)
    return -np.expm1(s * np.log1p(-per_sample_hit))
