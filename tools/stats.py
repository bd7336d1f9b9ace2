"""Whether a difference between runs is real: McNemar's test on the same test images, and a
paired t rule over seeds for calling a grid cell tied with the best.

Pure Python (``math``, ``statistics``), so the comparison tools need no scipy.

Two runs on the same images are compared by the images only one of them gets right: b (A right,
B wrong) and c (A wrong, B right). McNemar's exact p-value decides ``significant``; the textbook
chi-square statistic is reported beside it. The interval is the Wald interval for paired
proportions (Agresti, Categorical Data Analysis, 2002, section 10.1), an effect size whose verdict
can differ from the exact test's when b + c is small.

Tie rule for seeds: two cells trained with the same seeds share each seed's data order, so they
are compared seed by seed; a cell is tied with the best when the two-sided Student t interval
(95% by default) of the mean per-seed difference contains 0. One seed gives no verdict
(``tied is None``). Cells whose seeds differ are refused rather than compared by Welch's test:
in the grid every cell has the same seeds, so a missing one is a failed run to rerun.

Two kinds of noise, and the words for each, shared by every report: McNemar on one model per side
measures test-set noise only (which images a given model gets right): its result *differs on the
test images* or is *within test-set noise*. Seeds measure training noise (what another seed would
change): across seeds a change is *better*, *worse* or *tied*. Where one model per side differs
on the test images by less than the grid's seed spread (``seed_spread``), it is *within training
noise*.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from stages.core.errors import PipelineError


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact p of b ~ Bin(b + c, 1/2), min(1, 2 P(X <= min(b, c))), summed in exact
    integers: b + c in the tens of thousands loses no digits (a p below float's range is 0.0)."""
    n = b + c
    term = total = 1
    for k in range(min(b, c)):
        term = term * (n - k) // (k + 1)
        total += term
    return min(1.0, 2 * total / 2**n)


def mcnemar_chi2(b: int, c: int) -> tuple[float, float]:
    """(b - c)^2 / (b + c) without continuity correction and its chi-square (1 df) p-value: the
    figure textbooks quote; (0, 1) when no image changed."""
    if b + c == 0:
        return 0.0, 1.0
    chi2 = (b - c) ** 2 / (b + c)
    return chi2, math.erfc(math.sqrt(chi2 / 2))


def paired_interval(b: int, c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wald interval of (c - b) / n, the accuracy of B minus A: se = sqrt(b + c - (c - b)^2 / n) / n."""
    z = statistics.NormalDist().inv_cdf((1 + confidence) / 2)
    delta = (c - b) / n
    half = z * math.sqrt(b + c - (c - b) ** 2 / n) / n
    return delta - half, delta + half


@dataclass(frozen=True)
class PairedComparison:
    """Run A against run B on the same n images; ``delta`` and ``interval`` are B minus A."""

    n: int
    accuracy_a: float
    accuracy_b: float
    delta: float
    interval: tuple[float, float]
    b: int
    """Images A got right and B got wrong."""
    c: int
    """Images A got wrong and B got right."""
    p_value: float
    """McNemar's exact two-sided p: what ``significant`` is decided on."""
    chi2: float
    chi2_p_value: float
    alpha: float
    significant: bool

    @property
    def p_text(self) -> str:
        return "p < 0.0001" if self.p_value < 0.0001 else f"p = {self.p_value:.4f}"

    def line(self, metric: str = "test accuracy", spread: float | None = None) -> str:
        """One line for a report, e.g. ``test accuracy 0.9744 -> 0.9775 (+0.0031, 95% CI +0.0012
        to +0.0050); 72 images fixed, 41 broken, of 10,000; McNemar p = 0.0043: significant at 5%``;
        with ``spread`` (``seed_spread``), what a significant result means next to training noise."""
        low, high = self.interval
        verdict = "significant" if self.significant else "not significant"
        line = (
            f"{metric} {self.accuracy_a:.4f} -> {self.accuracy_b:.4f} ({self.delta:+.4f}, "
            f"{_percent(1 - self.alpha)} CI {low:+.4f} to {high:+.4f}); "
            f"{self.c:,} images fixed, {self.b:,} broken, of {self.n:,}; "
            f"McNemar {self.p_text}: {verdict} at {_percent(self.alpha)}"
        )
        if self.significant and spread is not None:
            within = abs(self.delta) <= spread
            line += (
                f" on these images, but {WITHIN_TRAINING}: seeds alone move such a difference by up to ±{spread:.4f}"
                if within
                else f", and beyond the seed spread (±{spread:.4f})"
            )
        return line

    def verdict(self, spread: float | None = None) -> str:
        """In the shared words (module docstring): ``within test-set noise``, or ``differs on the test
        images`` and, with the grid's ``spread``, whether that is within training noise."""
        if not self.significant:
            return WITHIN_TEST_SET
        if spread is None:
            return f"{DIFFERS} (one model each)"
        return f"{DIFFERS}, {WITHIN_TRAINING if abs(self.delta) <= spread else 'beyond the seed spread'}"


WITHIN_TEST_SET = "within test-set noise"
DIFFERS = "differs on the test images"
WITHIN_TRAINING = "within training noise"


def compare_predictions(
    predictions_a: Sequence[int], predictions_b: Sequence[int], labels: Sequence[int], alpha: float = 0.05
) -> PairedComparison:
    """Two runs' per-image predictions on the same labelled images (plain ints: ``tensor.tolist()``);
    the interval's confidence is 1 - alpha, so it agrees in level with ``significant``."""
    for run, predictions in (("run A", predictions_a), ("run B", predictions_b)):
        if len(predictions) != len(labels):
            raise PipelineError(
                f"{run} has predictions for {len(predictions):,} images but there are {len(labels):,} labels:"
                " both runs must be evaluated on the same images"
            )
    if not labels:
        raise PipelineError("no images to compare")
    triples = zip(predictions_a, predictions_b, labels, strict=True)
    outcomes = Counter((a == label, b == label) for a, b, label in triples)
    both, b, c, n = outcomes[True, True], outcomes[True, False], outcomes[False, True], len(labels)
    p_value, (chi2, chi2_p_value) = mcnemar_exact_p(b, c), mcnemar_chi2(b, c)
    return PairedComparison(
        n=n,
        accuracy_a=(both + b) / n,
        accuracy_b=(both + c) / n,
        delta=(c - b) / n,
        interval=paired_interval(b, c, n, 1 - alpha),
        b=b,
        c=c,
        p_value=p_value,
        chi2=chi2,
        chi2_p_value=chi2_p_value,
        alpha=alpha,
        significant=p_value < alpha,
    )


def compare_pairs(
    pairs_a: Sequence[tuple[int, int]], pairs_b: Sequence[tuple[int, int]], alpha: float = 0.05
) -> PairedComparison | None:
    """``compare_predictions`` of two runs' ``(actual, predicted)`` pairs, as ``plots/confusion.csv``
    holds them; None when the runs were tested on different images."""
    labels = [actual for actual, _ in pairs_a]
    if labels != [actual for actual, _ in pairs_b]:
        return None
    return compare_predictions([predicted for _, predicted in pairs_a], [predicted for _, predicted in pairs_b],
                               labels, alpha)  # fmt: skip


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.4g}%"


@dataclass(frozen=True)
class SeedSummary:
    mean: float
    std: float
    """Sample standard deviation (n - 1 in the denominator); 0 for a single seed."""
    n: int

    def text(self) -> str:
        """``0.9950 ± 0.0005``; the mean alone for one seed."""
        return f"{self.mean:.4f} ± {self.std:.4f}" if self.n > 1 else f"{self.mean:.4f}"


def summarise_seeds(values: Collection[float]) -> SeedSummary:
    """One cell's metric over its seeds."""
    if not values:
        raise PipelineError("no seeds to summarise")
    return SeedSummary(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


@dataclass(frozen=True)
class SeedComparison:
    """Another cell against the best, seed by seed; ``difference`` and ``interval`` are other minus best."""

    n: int
    difference: float
    interval: tuple[float, float] | None
    """The paired t interval of the mean difference; None with one seed."""
    tied: bool | None
    """Whether the interval contains 0; None with one seed, which can call nothing tied or different."""
    confidence: float = 0.95

    def text(self, how: str = "") -> str:
        """``-0.0035 (95% CI -0.0042 to -0.0029)``, ``how`` (e.g. ``, paired by seed``) inside the
        parentheses; the difference alone for one seed."""
        if self.interval is None:
            return f"{self.difference:+.4f}"
        low, high = self.interval
        return f"{self.difference:+.4f} ({self.confidence:.0%} CI {low:+.4f} to {high:+.4f}{how})"


def compare_seeds(best: Mapping[int, float], other: Mapping[int, float], confidence: float = 0.95) -> SeedComparison:
    """The tie rule of the module docstring, on seed -> metric of each cell."""
    if set(best) != set(other):
        raise PipelineError(
            f"the cells were trained with different seeds ({', '.join(map(str, sorted(best)))} against "
            f"{', '.join(map(str, sorted(other)))}): the tie rule compares runs of the same seed"
        )
    if not best:
        raise PipelineError("no seeds to compare")
    differences = [other[seed] - best[seed] for seed in sorted(best)]
    n, mean = len(differences), statistics.fmean(differences)
    if n == 1:
        return SeedComparison(1, mean, None, None, confidence)
    half = t_critical(n - 1, confidence) * statistics.stdev(differences) / math.sqrt(n)
    return SeedComparison(n, mean, (mean - half, mean + half), mean - half <= 0 <= mean + half, confidence)


def seed_verdict(comparison: SeedComparison) -> str:
    """``other`` against ``best`` in the shared words: better, worse, tied, or no verdict (one seed)."""
    if comparison.tied is None:
        return "no verdict"
    return "tied" if comparison.tied else "better" if comparison.difference > 0 else "worse"


def seed_spread(std_a: float, std_b: float, confidence: float = 0.95) -> float:
    """How far seeds alone move the difference between one run of each of two configurations whose
    metric has these standard deviations over seeds: the two-sided normal bound of a difference of
    independent runs, z * sqrt(std_a^2 + std_b^2) (1.96 for 95%)."""
    return statistics.NormalDist().inv_cdf((1 + confidence) / 2) * math.hypot(std_a, std_b)


def t_critical(df: int, confidence: float = 0.95) -> float:
    """The two-sided Student t value with P(|T| <= t) = confidence, by bisection on the exact
    distribution function, so no table bounds the number of seeds."""
    low, high = 0.0, 1.0
    while _t_central(high, df) < confidence:
        low, high = high, 2 * high
    for _ in range(64):
        middle = (low + high) / 2
        low, high = (middle, high) if _t_central(middle, df) < confidence else (low, middle)
    return high


def _t_central(t: float, df: int) -> float:
    """P(|T| <= t) for a whole number of degrees of freedom, in closed form (Abramowitz and
    Stegun 26.7.3): a finite series in cos(theta), theta = atan(t / sqrt(df))."""
    theta = math.atan(t / math.sqrt(df))
    cos = math.cos(theta)
    total, term = 0.0, cos ** (df % 2)
    for k in range(1 + df % 2, df, 2):
        total += term
        term *= cos * cos * k / (k + 1)
    return 2 / math.pi * (theta + math.sin(theta) * total) if df % 2 else math.sin(theta) * total
