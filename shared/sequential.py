"""Stop when decided: the sequential rule of `stop: {when: decided, ...}`. Pure, no I/O.

An experiment with a stop rule runs its samples in rounds: a first round of
`min_samples`, then rounds of `check_every`, up to `max_samples`. After each
round every paired verdict (each non-baseline variant against its model's
baseline, ΔF1 macro on the same samples) is looked at; the experiment stops as
soon as every one is decided: its ΔF1 interval excludes 0, or its half-width is
at most `f1_tolerance` (shared.verdicts.delta_decided).

Looking after every round inflates false decisions (a null pair would sooner or
later cross 0 by chance), so each look uses an interval at level 1 - alpha/K,
K the planned number of looks: Bonferroni over the looks keeps the chance of
any false "different" verdict of a pair, over all its looks, at most alpha, as
far as each interval holds its level; on few samples a bootstrap interval does
not, so each is expanded (expanded_level) and the first look waits for
MIN_SAMPLES samples.
"""
from __future__ import annotations

import math
from typing import Sequence

from shared.verdicts import delta_decided, paired_delta_ci

ALPHA = 0.05
METRIC = "f1_macro"
METHOD = ("Bonferroni over {looks} planned looks: each look's paired bootstrap ΔF1 (macro) interval "
          "at level 1 - {alpha}/{looks} = {level:.4f}, expanded for small samples (expanded percentile, "
          "t on n - labels df; at least {n_boot} resamples, seed {seed})")


def round_sizes(min_samples: int, max_samples: int, check_every: int) -> list[int]:
    """Samples per round: min_samples, then check_every each, the last one cut at max_samples.
    Their sum is max_samples; their count is the number of looks K = ceil((max-min)/check_every)+1."""
    sizes = [min(min_samples, max_samples)]
    while sum(sizes) < max_samples:
        sizes.append(min(check_every, max_samples - sum(sizes)))
    return sizes


def planned_looks(min_samples: int, max_samples: int, check_every: int) -> int:
    """K: looks at the data, one after each round (the last at max_samples)."""
    return math.ceil((max_samples - min_samples) / check_every) + 1


def look_level(looks: int, alpha: float = ALPHA) -> float:
    """Confidence level of each look's interval so that K looks together err with chance <= alpha."""
    return 1.0 - alpha / looks


# A bootstrap interval is too narrow on few samples: with the plain percentile interval, simulated
# null pairs (tests/test_sequential.py) were called "different" in 17 % of 400 experiments with
# rounds of 6 up to 18 and 5.3 % with rounds of 12 up to 60. Looks start at 30 samples, and each
# interval is expanded (expanded_level): rounds of 30 up to 210, 3.25 % and 4.75 % (two seeds).
MIN_SAMPLES = 30
# Resamples beyond each end of a look's interval, at least: a Bonferroni level puts the ends far
# in the tails (0.3 % at 10 looks), where too few resamples make them noisy (400 resamples at
# 10 looks: 7.25 % false "different"; 2000: 3.25 %).
TAIL_RESAMPLES = 10
MAX_RESAMPLES = 200_000


def resamples_for(level: float, at_least: int = 2000) -> int:
    """Bootstrap resamples for an interval at `level` (0..1): at least TAIL_RESAMPLES beyond
    each end, and at least `at_least`, at most MAX_RESAMPLES."""
    tail = (1.0 - level) / 2.0
    return int(min(MAX_RESAMPLES, max(at_least, math.ceil(TAIL_RESAMPLES / tail))))


def method_text(looks: int, n_boot: int, seed: int, alpha: float = ALPHA) -> str:
    return METHOD.format(looks=looks, alpha=alpha, level=look_level(looks, alpha), n_boot=n_boot, seed=seed)


def expanded_level(level: float, n: int, strata: int) -> float:
    """The percentile level (0..1) that makes a bootstrap interval at `level` as wide as a t interval
    on n samples: Hesterberg's "expanded percentile" interval (2015, "What teachers should know
    about the bootstrap"), with n - strata degrees of freedom since the bootstrap resamples within
    each of `strata` true labels. A percentile interval is too narrow on few samples, the more so far
    in the tails where a Bonferroni level puts it: simulated null pairs, rounds of 30 up to 210,
    were called "different" in 5.25 % of 400 experiments with the plain percentile interval."""
    from scipy.stats import norm, t

    df = n - strata
    if df <= 0:
        return level
    tail = (1.0 - level) / 2.0
    return float(1.0 - 2.0 * norm.sf(math.sqrt(n / df) * t.isf(tail, df)))


def look(pairs: Sequence[tuple[str, Sequence[str], Sequence[str | None], Sequence[str | None]]],
         labels: Sequence[str], tolerance: float, level: float, *, n_boot: int = 2000,
         seed: int = 0) -> dict:
    """One look: pairs are (name, true labels, baseline answers, variant answers), the same
    samples in the same order. tolerance in F1 points (fraction 0..1). Each pair's interval is
    the paired bootstrap's at the expanded level of `level` (expanded_level), with at least
    n_boot resamples and enough for that level (resamples_for).

    Returns {"decided": every pair decided, "pairs": [{name, n, delta, low, high, half_width,
    decided, verdict}]}. No pair at all counts as undecided (nothing to compare)."""
    out = []
    for name, y_true, base, other in pairs:
        wide = expanded_level(level, len(y_true), len(set(y_true)))
        delta, low, high = paired_delta_ci(y_true, base, other, labels, METRIC, seed=seed, level=wide,
                                           n_boot=max(n_boot, resamples_for(wide)))
        out.append({"name": name, "n": len(y_true), "delta": delta, "low": low, "high": high,
                    "half_width": (high - low) / 2, **delta_decided(low, high, tolerance)})
    return {"decided": bool(out) and all(p["decided"] for p in out), "pairs": out}


def should_stop(decided: bool, samples_done: int, max_samples: int) -> bool:
    """Stop sending rounds: every verdict decided, or max_samples reached."""
    return decided or samples_done >= max_samples


def energy_saved_kwh(energy_kwh_per_inference: float | None, tasks_not_run: int) -> float | None:
    """ESTIMATE of the energy not spent (kWh): the mean measured energy per inference so far times
    the tasks the stop rule did not run. None when nothing was measured."""
    if energy_kwh_per_inference is None or not math.isfinite(energy_kwh_per_inference):
        return None
    return energy_kwh_per_inference * tasks_not_run


def outcome_line(outcome: dict) -> str:
    """One sentence for the report, from the experiment's stop record (F1 in points 0..1)."""
    n, cap = outcome.get("n_samples"), outcome.get("max_samples")
    if outcome.get("state") != "finished":
        return f"stop when decided: in progress ({n} of at most {cap} samples so far)"
    saved = outcome.get("energy_saved_kwh")
    saved_txt = ("" if saved is None or not outcome.get("tasks_not_run") else
                 f"; about {saved * 1000:.3g} Wh saved vs {cap} samples (estimate: mean energy per "
                 f"inference x {outcome['tasks_not_run']} tasks not run)")
    if outcome.get("decided"):
        head = f"Stopped: decided after {n} samples of at most {cap}"
    else:
        head = f"Not decided by max_samples ({n} samples): at least one verdict is still open"
    looks = outcome.get("looks") or []
    pairs = "; ".join(f"{p['name']}: ΔF1 macro {p['delta']:+.2f} [{p['low']:+.2f}, {p['high']:+.2f}] "
                      f"{p['verdict']}" for p in (looks[-1]["pairs"] if looks else []))
    level = outcome.get("level")
    at = f" (intervals at {level:.2%})" if level else ""
    return f"{head}{saved_txt}. {pairs}{at}. Method: {outcome.get('method', '')}"
