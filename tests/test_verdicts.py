"""The statistics behind report verdicts (shared/verdicts.py): pure functions over prediction lists.

Oracles are independent of the code under test: coverage is checked against the known truth of a
simulated classifier, McNemar against a binomial p-value computed by hand and by scipy, point
metrics against scikit-learn.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score

from shared import verdicts as v

LABELS = ["neg", "neu", "pos"]
# P(answer | true label) of a simulated classifier; rows: true neg, neu, pos
P = np.array([[0.70, 0.20, 0.10], [0.25, 0.55, 0.20], [0.10, 0.30, 0.60]])


def _simulate(rng, counts, probs=P):
    """One stratified experiment: counts[c] samples of true label c, answers drawn from probs[c]."""
    y_true, y_pred = [], []
    for c, n in enumerate(counts):
        answers = rng.choice(len(LABELS), size=n, p=probs[c])
        y_true += [LABELS[c]] * n
        y_pred += [LABELS[a] for a in answers]
    return y_true, y_pred


def _population_truth(counts, probs=P):
    """Accuracy and macro-F1 of the expected confusion matrix, computed by hand from the formulas."""
    cm = np.asarray(counts, float)[:, None] * probs
    acc = np.trace(cm) / cm.sum()
    f1 = [2 * cm[j, j] / (cm[:, j].sum() + cm[j, :].sum()) for j in range(len(LABELS))]
    return {"accuracy": acc, "f1_macro": float(np.mean(f1))}


def test_point_estimates_match_scikit_learn_and_unparsed_counts_wrong():
    y_true = ["neg", "neu", "pos", "pos", "neu", "neg", "pos"]
    y_pred = ["neg", None, "pos", "maybe", "neu", "pos", "pos"]
    scored = [p if p in LABELS else "<unparsed>" for p in y_pred]
    assert v.point(y_true, y_pred, LABELS, "accuracy") == pytest.approx(accuracy_score(y_true, scored))
    for avg in ("macro", "weighted"):
        ref = f1_score(y_true, scored, labels=LABELS, average=avg, zero_division=0)
        assert v.point(y_true, y_pred, LABELS, f"f1_{avg}") == pytest.approx(ref)
        point, low, high = v.bootstrap_ci(y_true, y_pred, LABELS, f"f1_{avg}", n_boot=500)
        assert point == pytest.approx(ref) and low <= point <= high


def test_95_percent_interval_covers_the_truth_in_93_to_97_percent_of_600_experiments():
    """600 simulated experiments of 120 stratified samples; n_boot=1000 inside the simulation."""
    counts = (30, 30, 60)
    truth = _population_truth(counts)
    rng = np.random.default_rng(2026)
    hits = {m: 0 for m in truth}
    n_exp = 600
    for e in range(n_exp):
        y_true, y_pred = _simulate(rng, counts)
        cis = v.bootstrap_cis(y_true, y_pred, LABELS, tuple(truth), n_boot=1000, seed=e)
        for m in truth:
            hits[m] += cis[m][1] <= truth[m] <= cis[m][2]
    for m, h in hits.items():
        assert 0.93 <= h / n_exp <= 0.97, (m, h / n_exp)


def test_interval_is_reproducible_with_a_fixed_seed_and_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    small = _simulate(rng, (20, 20, 20))
    large = _simulate(rng, (200, 200, 200))
    a = v.bootstrap_ci(*small, LABELS, "f1_macro", seed=5)
    assert a == v.bootstrap_ci(*small, LABELS, "f1_macro", seed=5)
    b = v.bootstrap_ci(*large, LABELS, "f1_macro", seed=5)
    assert (b[2] - b[1]) < (a[2] - a[1]) / 2


def test_mcnemar_agrees_with_a_binomial_p_value_computed_by_hand():
    # 20 samples, all true "pos": a right on 2 that b gets wrong, b right on 9 that a gets wrong,
    # both right on 6, both wrong on 3.
    y_true = ["pos"] * 20
    pred_a = ["pos"] * 2 + ["neg"] * 9 + ["pos"] * 6 + ["neu"] * 3
    pred_b = ["neg"] * 2 + ["pos"] * 9 + ["pos"] * 6 + [None] * 3
    out = v.mcnemar_exact(y_true, pred_a, pred_b)
    assert (out["only_a_right"], out["only_b_right"], out["both_right"], out["both_wrong"]) == (2, 9, 6, 3)
    by_hand = 2 * (math.comb(11, 0) + math.comb(11, 1) + math.comb(11, 2)) / 2 ** 11   # = 134/2048
    assert out["pvalue"] == pytest.approx(by_hand)
    assert out["pvalue"] == pytest.approx(binomtest(2, 11, 0.5).pvalue)
    assert v.mcnemar_exact(y_true, pred_a, pred_a)["pvalue"] == 1.0


def test_paired_delta_excludes_zero_on_an_easy_pair_and_includes_it_on_identical_answers():
    rng = np.random.default_rng(3)
    good = np.full((3, 3), 0.05) + np.eye(3) * 0.85
    y_true, pred_a = _simulate(rng, (50, 50, 50), good)
    pred_b = [t if rng.random() < 0.3 else LABELS[rng.integers(3)] for t in y_true]   # much worse
    for m in ("f1_macro", "f1_weighted"):
        delta, low, high = v.paired_delta_ci(y_true, pred_a, pred_b, LABELS, m)
        ref = (f1_score(y_true, pred_b, average=m[3:], labels=LABELS)
               - f1_score(y_true, pred_a, average=m[3:], labels=LABELS))
        assert delta == pytest.approx(ref) and high < 0
        assert v.delta_decided(low, high, 0.03) == {"decided": True, "verdict": "worse"}
    delta, low, high = v.paired_delta_ci(y_true, pred_a, pred_a, LABELS, "f1_macro")
    assert low <= 0 <= high and delta == 0


def test_constant_predictor_is_flagged_and_a_good_one_is_not():
    rng = np.random.default_rng(4)
    y_true, good = _simulate(rng, (40, 60, 50), np.full((3, 3), 0.05) + np.eye(3) * 0.85)
    majority = v.majority_answers(y_true, LABELS)
    assert set(majority) == {"neu"}                          # the most frequent true label
    maj = {m: v.point(y_true, majority, LABELS, m) for m in ("f1_macro", "f1_weighted")}
    assert maj["f1_weighted"] == pytest.approx(f1_score(y_true, majority, average="weighted", labels=LABELS,
                                                        zero_division=0))
    constant = ["pos"] * len(y_true)
    lows = {m: v.bootstrap_ci(y_true, constant, LABELS, m)[1] for m in maj}
    assert v.constant_answer_reasons(lows, maj, v.dominant_share(constant)[1])
    lows = {m: v.bootstrap_ci(y_true, good, LABELS, m)[1] for m in maj}
    assert v.constant_answer_reasons(lows, maj, v.dominant_share(good)[1]) == []


def test_uniform_random_expectation_is_near_one_over_the_number_of_labels():
    y_true = ["neg"] * 100 + ["neu"] * 100 + ["pos"] * 100
    expected = v.uniform_random_expected(y_true, LABELS, ("accuracy", "f1_macro"))
    assert expected["accuracy"] == pytest.approx(1 / 3, abs=0.01)
    assert expected["f1_macro"] == pytest.approx(1 / 3, abs=0.02)


def test_paired_ratio_interval_and_samples_to_resolve():
    rng = np.random.default_rng(5)
    a = rng.gamma(4.0, 1.0, size=200)
    ratio, low, high = v.paired_ratio_ci(a, a * 0.5 + rng.normal(0, 0.05, 200))
    assert low <= ratio <= high and 0.45 < low and high < 0.55
    assert v.samples_to_resolve(0.12, 60, 0.03) == 960          # 60 * (0.12 / 0.03)^2
    assert v.samples_to_resolve(0.02, 60, 0.03) == 60
