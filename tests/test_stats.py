"""Whether a difference is real: McNemar on the same test images, the tie rule over seeds."""

from __future__ import annotations

import math
import time

import pytest

from stages.core.errors import PipelineError
from tools.stats import (
    SeedSummary,
    compare_pairs,
    compare_predictions,
    compare_seeds,
    mcnemar_chi2,
    mcnemar_exact_p,
    paired_interval,
    seed_spread,
    seed_verdict,
    summarise_seeds,
    t_critical,
)


def runs_with(b: int, c: int, same: int = 100) -> tuple[list[int], list[int], list[int]]:
    """Predictions of runs A and B and the labels: b images only A gets right, c only B, and
    ``same`` that both get right; the label is always 1, a wrong prediction 0."""
    a = [1] * b + [0] * c + [1] * same
    return a, [1 - x for x in a[: b + c]] + [1] * same, [1] * (b + c + same)


def test_identical_predictions_are_no_difference():
    labels = [3, 1, 4, 1, 5, 9, 2, 6]
    predictions = [3, 1, 4, 0, 5, 9, 2, 0]
    result = compare_predictions(predictions, predictions, labels)
    assert (result.p_value, result.delta, result.interval, result.chi2) == (1.0, 0.0, (0.0, 0.0), 0.0)
    assert result.accuracy_a == result.accuracy_b == 0.75 and not result.significant
    assert result.line().endswith("McNemar p = 1.0000: not significant at 5%")


def test_many_images_fixed_and_none_broken_is_significant():
    result = compare_predictions(*runs_with(b=0, c=40))
    assert result.significant and result.p_value == 2 / 2**40
    assert (result.b, result.c, result.n) == (0, 40, 140) and result.delta == 40 / 140 > result.interval[0] > 0
    assert result.line() == (
        "test accuracy 0.7143 -> 1.0000 (+0.2857, 95% CI +0.2109 to +0.3605); "
        "40 images fixed, 0 broken, of 140; McNemar p < 0.0001: significant at 5%"
    )


def test_as_many_images_broken_as_fixed_is_not_significant():
    result = compare_predictions(*runs_with(b=30, c=30))
    assert not result.significant and result.p_value == 1.0 and result.delta == 0.0
    assert result.interval[0] < 0 < result.interval[1]
    assert "not significant at 5%" in result.line("validation accuracy")


def test_confusion_pairs_compare_only_on_the_same_test_images():
    """``plots/confusion.csv`` rows, (actual, predicted): as ``compare_predictions`` of their columns."""
    a, b, labels = runs_with(b=5, c=15)
    pairs_a, pairs_b = list(zip(labels, a, strict=True)), list(zip(labels, b, strict=True))
    assert compare_pairs(pairs_a, pairs_b) == compare_predictions(a, b, labels)
    assert compare_pairs(pairs_a, [(actual + 1, predicted) for actual, predicted in pairs_b]) is None


def test_mcnemar_matches_agresti_presidential_approval():
    # Agresti, Categorical Data Analysis (2002), Table 10.1: 794 approve twice, 150 approve then
    # disapprove, 86 disapprove then approve, 570 disapprove twice; z^2 = 17.36, p < 0.001.
    chi2, chi2_p = mcnemar_chi2(150, 86)
    assert round(chi2, 2) == 17.36 and chi2_p < 0.001
    assert mcnemar_exact_p(150, 86) < 0.001
    low, high = paired_interval(150, 86, 1600)  # approval fell by 0.04, CI (-0.06, -0.02)
    assert (round(low, 2), round(high, 2)) == (-0.06, -0.02)


def test_exact_p_of_a_small_case_by_hand():
    # b + c = 10: p = 2 P(X <= 1) = 2 (C(10, 0) + C(10, 1)) / 2^10
    assert mcnemar_exact_p(1, 9) == mcnemar_exact_p(9, 1) == 2 * (1 + 10) / 2**10 == 0.021484375
    assert mcnemar_exact_p(0, 0) == 1.0


def test_exact_p_is_fast_and_finite_for_twenty_thousand_changed_images():
    start = time.perf_counter()
    p = mcnemar_exact_p(9_800, 10_200)
    assert time.perf_counter() - start < 1.0
    # the normal approximation with continuity correction: z = 399 / sqrt(20,000)
    assert p == pytest.approx(math.erfc(399 / math.sqrt(20_000) / math.sqrt(2)), rel=0.01)
    assert mcnemar_exact_p(10_000, 10_000) == 1.0 and mcnemar_exact_p(0, 20_000) == 0.0


def test_interval_by_hand():
    # 100 images, 5 broken, 15 fixed: delta 0.1, se = sqrt(5 + 15 - 10^2 / 100) / 100 = sqrt(19) / 100
    low, high = compare_predictions(*runs_with(b=5, c=15, same=80)).interval
    half = 1.959964 * math.sqrt(19) / 100
    assert low == pytest.approx(0.1 - half, abs=1e-6) and high == pytest.approx(0.1 + half, abs=1e-6)


def test_interval_and_verdict_follow_alpha():
    strict = compare_predictions(*runs_with(b=1, c=9), alpha=0.01)
    assert not strict.significant and strict.line().endswith("p = 0.0215: not significant at 1%")
    assert "99% CI" in strict.line()
    assert compare_predictions(*runs_with(b=1, c=9)).significant


def test_runs_of_different_lengths_are_one_error_naming_both():
    with pytest.raises(PipelineError) as error:
        compare_predictions([1] * 10_000, [1] * 9_999, [1] * 10_000)
    assert str(error.value) == (
        "run B has predictions for 9,999 images but there are 10,000 labels:"
        " both runs must be evaluated on the same images"
    )


def test_seeds_summarised_by_mean_and_sample_std():
    summary = summarise_seeds([0.97, 0.98, 0.99])
    assert summary.mean == pytest.approx(0.98) and summary.std == pytest.approx(0.01) and summary.n == 3
    assert summarise_seeds([0.5]) == SeedSummary(mean=0.5, std=0.0, n=1)


def test_t_critical_values_match_the_published_table():
    assert [round(t_critical(df), 3) for df in (1, 2, 4, 9, 30)] == [12.706, 4.303, 2.776, 2.262, 2.042]
    assert round(t_critical(9, 0.99), 3) == 3.250 and round(t_critical(100_000), 2) == 1.96


def test_cell_whose_seed_differences_straddle_zero_is_tied():
    best = {1: 0.975, 2: 0.978, 3: 0.976}
    other = {1: 0.976, 2: 0.975, 3: 0.977}  # differences +0.001, -0.003, +0.001
    result = compare_seeds(best, other)
    assert result.tied is True and result.n == 3
    assert result.interval[0] < 0 < result.interval[1] and result.difference == pytest.approx(-0.001 / 3)


def test_cell_behind_the_best_on_every_seed_is_not_tied():
    best = {1: 0.975, 2: 0.978, 3: 0.976}
    other = {1: 0.965, 2: 0.969, 3: 0.965}  # differences -0.010, -0.009, -0.011
    result = compare_seeds(best, other)
    assert result.tied is False and result.interval[1] < 0 and result.difference == pytest.approx(-0.010)


def test_one_seed_gives_no_verdict():
    result = compare_seeds({42: 0.975}, {42: 0.941})
    assert result.tied is None and result.interval is None and result.difference == pytest.approx(-0.034)


def test_cells_with_different_seeds_are_refused():
    with pytest.raises(PipelineError, match=r"different seeds \(1, 2, 3 against 1, 2\)"):
        compare_seeds({1: 0.97, 2: 0.98, 3: 0.97}, {1: 0.97, 2: 0.98})


def test_the_words_for_seeds_and_the_seed_spread_of_a_one_seed_difference():
    best = {1: 0.975, 2: 0.978, 3: 0.976}
    words = [seed_verdict(compare_seeds(best, {seed: best[seed] + shift for seed in best})) for shift in (0.01, -0.01)]
    assert words == ["better", "worse"]
    assert seed_verdict(compare_seeds({1: 0.97}, {1: 0.98})) == "no verdict"
    # 3-4-5: a difference of two independent runs with these stds has std 0.0005
    assert seed_spread(0.0003, 0.0004) == pytest.approx(1.959964 * 0.0005, rel=1e-6)
    one_model_each = compare_predictions(*runs_with(b=1, c=9, same=990))  # +0.008, p = 0.0215
    assert one_model_each.verdict() == "differs on the test images (one model each)"
    assert one_model_each.verdict(0.01) == "differs on the test images, within training noise"
    assert one_model_each.verdict(0.005) == "differs on the test images, beyond the seed spread"
    assert compare_predictions(*runs_with(b=30, c=30)).verdict(0.01) == "within test-set noise"
