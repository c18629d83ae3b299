"""Output rules of a refiner and their held-out selection: how PRN is kept from doing harm.

A PRN has a global head G and (for grid > 0) a local head L. How its output becomes a mask is a
*rule*: the authors' combination G>0.5 ∪ dilate₃ₓ₃(G>0.5 ∩ L>0.5), one head at 0.5, one head or
the mean of both heads at a threshold tuned on held-out maps, or — the fallback — the base map at
its best global threshold. :class:`RuleScores` streams held-out maps once and scores every rule
on them; :func:`choose_rule` picks the best PRN rule and falls back to the base map unless PRN
beats the base model's best global threshold by a margin (docs/refiner.md, "Do no harm").

Thresholds are swept in one pass: :class:`ThresholdSweep` keeps, for foreground and background
pixels separately, a histogram of how many grid thresholds each probability exceeds, from which
TP and FP at every threshold follow by cumulative sums (the same idea as the pseudo-labels).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from data_utils.errors import InputError
from patchrefinenet.refine.config import METRICS

#: Thresholds swept for tuned rules and for the base model's best global threshold: 0.01 … 0.99.
SWEEP_THRESHOLDS: tuple[float, ...] = tuple(round(0.01 * t, 2) for t in range(1, 100))
RULE_HEADS = ("authors", "global", "local", "mean", "base")



@dataclass(frozen=True)
class Rule:
    """How a refined mask is made: ``head`` in :data:`RULE_HEADS` thresholded at ``threshold`` (strict >).

    ``authors``: G>τ ∪ dilate₃ₓ₃(G>τ ∩ L>τ) (their rule uses τ = 0.5); ``global`` / ``local``: one
    head; ``mean``: (G + L)/2; ``base``: the input probability map itself (PRN is not used).
    """

    head: str
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.head not in RULE_HEADS:
            raise InputError(f"rule {self.head!r}: choose one of {', '.join(RULE_HEADS)}")
        if not 0.0 <= float(self.threshold) < 1.0:
            raise InputError(f"rule threshold {self.threshold!r}: must be in [0, 1)")

    @property
    def name(self) -> str:
        return f"{self.head}@{self.threshold:g}"

    @property
    def uses_local(self) -> bool:
        return self.head in ("authors", "local", "mean")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, text: str) -> "Rule":
        """``"global"``, ``"global@0.4"``, ``"authors"`` … -> Rule (threshold 0.5 when omitted)."""
        head, _, tau = str(text).partition("@")
        try:
            return cls(head.strip().lower(), float(tau) if tau else 0.5)
        except ValueError:
            raise InputError(f"rule {text!r}: expected HEAD or HEAD@THRESHOLD, e.g. global@0.45") from None


def authors_combination(global_prob: torch.Tensor, local_prob: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """G ∪ dilate₃ₓ₃(G ∩ L) as a bool (B, 1, H, W) map; pixels outside the image never dilate inwards."""
    g = global_prob > threshold
    both = (g & (local_prob > threshold)).float()
    grown = F.max_pool2d(both, kernel_size=3, stride=1, padding=1) > 0  # binary dilation, 3×3 square
    return g | grown


def apply_rule(rule: Rule, base: torch.Tensor, global_prob: torch.Tensor | None,
               local_prob: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(refined probability, bool mask), each (B, 1, H, W), of ``rule`` on one batch.

    The probability is the map the rule thresholds (the global head's for ``authors``).
    """
    if rule.head == "base":
        return base, base > rule.threshold
    if global_prob is None:
        raise InputError(f"rule {rule.name} needs the PRN's outputs")
    if rule.uses_local and local_prob is None:
        raise InputError(f"rule {rule.name} needs a local head, but this PRN has grid 0 (p0); use global")
    if rule.head == "authors":
        return global_prob, authors_combination(global_prob, local_prob, rule.threshold)
    prob = {"global": global_prob, "local": local_prob,
            "mean": None if local_prob is None else 0.5 * (global_prob + local_prob)}[rule.head]
    return prob, prob > rule.threshold


def score_counts(tp, fp, fn, metric: str = "pooled_iou") -> np.ndarray:
    """The selection metric from pooled counts (scalars or arrays, elementwise): pooled IoU
    (TP+1)/(TP+FP+FN+1) — the project's smoothing, docs/authors-refine.md §R10 — or Dice
    2TP/(2TP+FP+FN), 1 where nothing is predicted or true."""
    tp, fp, fn = (np.asarray(c, dtype=np.float64) for c in (tp, fp, fn))
    if metric == "pooled_iou":
        return (tp + 1.0) / (tp + fp + fn + 1.0)
    if metric == "dice":
        den = 2 * tp + fp + fn
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 1.0)
    raise InputError(f"selection metric {metric!r}: choose one of {', '.join(METRICS)}")


class ThresholdSweep:
    """Streaming TP / FP / FN of ``prob > t`` for every t of ``thresholds``, pooled over all pixels.

    ``update(prob, gt)`` takes tensors of any equal shape on any device (no host sync);
    ``scores(metric)`` returns one value per threshold (:func:`score_counts`).
    """

    def __init__(self, thresholds: tuple[float, ...] = SWEEP_THRESHOLDS) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        self._edges: torch.Tensor | None = None
        self._fg: torch.Tensor | None = None  # (T+1,) pixels by number of thresholds exceeded
        self._bg: torch.Tensor | None = None

    def update(self, prob: torch.Tensor, gt: torch.Tensor) -> None:
        if self._edges is None or self._edges.device != prob.device:
            self._edges = torch.tensor(self.thresholds, dtype=torch.float32, device=prob.device)
            n = len(self.thresholds) + 1
            fg = torch.zeros(n, dtype=torch.int64, device=prob.device)
            bg = torch.zeros(n, dtype=torch.int64, device=prob.device)
            if self._fg is not None:
                fg += self._fg.to(prob.device)
                bg += self._bg.to(prob.device)
            self._fg, self._bg = fg, bg
        # k = number of thresholds strictly below p: foreground at threshold j <=> j < k
        k = torch.bucketize(prob.detach().float().reshape(-1), self._edges, right=False)
        truth = gt.reshape(-1) > 0.5
        n = len(self.thresholds) + 1
        self._fg += torch.bincount(k[truth], minlength=n)
        self._bg += torch.bincount(k[~truth], minlength=n)

    def merge(self, other: "ThresholdSweep") -> None:
        """Add ``other``'s pixels (same thresholds) to this sweep."""
        if other.thresholds != self.thresholds:
            raise InputError("ThresholdSweep.merge: the sweeps use different thresholds")
        if other._fg is None:
            return
        if self._fg is None:
            self._edges, self._fg, self._bg = other._edges, other._fg.clone(), other._bg.clone()
            return
        self._fg += other._fg.to(self._fg.device)
        self._bg += other._bg.to(self._bg.device)

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(TP, FP, FN) per threshold as int64 arrays."""
        if self._fg is None:
            raise InputError("ThresholdSweep: no maps were seen")
        fg, bg = self._fg.cpu().numpy(), self._bg.cpu().numpy()
        # pixels with k > j are foreground at threshold j
        tp = fg[::-1].cumsum()[::-1][1:]
        fp = bg[::-1].cumsum()[::-1][1:]
        fn = fg.sum() - tp
        return tp, fp, fn

    def scores(self, metric: str = "pooled_iou") -> np.ndarray:
        return score_counts(*self.counts(), metric)

    def best(self, metric: str = "pooled_iou") -> tuple[float, float]:
        """(threshold, score) of the best threshold; the lowest one wins ties."""
        s = self.scores(metric)
        j = int(np.argmax(s))
        return self.thresholds[j], float(s[j])

    def score_at(self, threshold: float, metric: str = "pooled_iou") -> float:
        j = int(np.argmin([abs(t - threshold) for t in self.thresholds]))
        if abs(self.thresholds[j] - threshold) > 1e-9:
            raise InputError(f"threshold {threshold} is not on the sweep grid")
        return float(self.scores(metric)[j])


class _Counts:
    """Pooled TP/FP/FN of a fixed binary rule, accumulated on the device."""

    def __init__(self) -> None:
        self.t: torch.Tensor | None = None

    def update(self, mask: torch.Tensor, gt: torch.Tensor) -> None:
        truth = gt > 0.5
        c = torch.stack([(mask & truth).sum(), (mask & ~truth).sum(), (~mask & truth).sum()])
        self.t = c if self.t is None else self.t + c

    def score(self, metric: str) -> float:
        return float(score_counts(*self.t.cpu().numpy(), metric))


class RuleScores:
    """Scores of every candidate rule on a stream of held-out batches.

    ``update(base, global_prob, local_prob, gt)`` per batch ((B, 1, H, W) tensors); ``table()``
    then lists ``{rule name: score}`` for: base at its best threshold, global/local/mean at their
    best thresholds and at 0.5, and the authors' combination (local rules only for grid > 0).
    """

    def __init__(self, has_local: bool, metric: str = "pooled_iou") -> None:
        if metric not in METRICS:
            raise InputError(f"selection metric {metric!r}: choose one of {', '.join(METRICS)}")
        self.metric, self.has_local = metric, has_local
        heads = ["base", "global"] + (["local", "mean"] if has_local else [])
        self.sweeps = {h: ThresholdSweep() for h in heads}
        self.authors = _Counts() if has_local else None

    def update(self, base: torch.Tensor, global_prob: torch.Tensor, local_prob: torch.Tensor | None,
               gt: torch.Tensor) -> None:
        self.sweeps["base"].update(base, gt)
        self.sweeps["global"].update(global_prob, gt)
        if self.has_local:
            self.sweeps["local"].update(local_prob, gt)
            self.sweeps["mean"].update(0.5 * (global_prob + local_prob), gt)
            self.authors.update(authors_combination(global_prob, local_prob), gt)

    def table(self) -> dict[str, float]:
        """``{rule name: score}`` for every candidate, PRN rules first, the base rule last."""
        out: dict[str, float] = {}
        if self.authors is not None:
            out[Rule("authors").name] = self.authors.score(self.metric)
        for head, sweep in self.sweeps.items():
            if head == "base":
                continue
            tau, score = sweep.best(self.metric)
            out[Rule(head, tau).name] = score
            out[Rule(head, 0.5).name] = sweep.score_at(0.5, self.metric)
        tau, score = self.sweeps["base"].best(self.metric)
        out[Rule("base", tau).name] = score
        return out

    def best_prn(self) -> tuple[Rule, float]:
        """The best PRN rule (not the base) and its score; ties go to the earlier rule in :meth:`table`."""
        best_name, best = None, -1.0
        for name, score in self.table().items():
            if not name.startswith("base@") and score > best:
                best_name, best = name, score
        return Rule.parse(best_name), best


@dataclass(frozen=True)
class Selection:
    """The outcome of held-out selection: the rule applied by default and why."""

    rule: Rule
    prn_rule: Rule
    prn_score: float
    base_rule: Rule
    base_score: float
    margin: float
    metric: str
    fell_back: bool
    forced: bool
    scores: dict[str, float]
    n_maps: int
    confidence: float = 0.0  # bootstrap confidence that PRN beats the base map (0: not required)
    gain_lower: float | None = None  # the matching lower bound of the gain (None: not computed)
    n_judge: int = 0  # of the n_maps, those that only judged (0: the same maps chose and judged)

    def message(self) -> str:
        gain = 100 * (self.prn_score - self.base_score)
        where = (f"on {self.n_judge} held-out maps that took no part in choosing (of {self.n_maps})"
                 if self.n_judge else f"on {self.n_maps} held-out maps")
        head = (f"{where}, best PRN rule {self.prn_rule.name} scores {self.prn_score:.4f} "
                f"{self.metric} vs {self.base_score:.4f} for the base map at its best global threshold "
                f"({self.base_rule.name}): {gain:+.2f} points")
        if self.gain_lower is not None:
            head += (f" ({100 * self.confidence:.0f} % bootstrap lower bound over the maps: "
                     f"{100 * self.gain_lower:+.2f})")
        if self.fell_back:
            why = (f"below the required margin of {100 * self.margin:.2f} points"
                   if self.prn_score < self.base_score + self.margin else
                   f"not better than the base map with {100 * self.confidence:.0f} % confidence")
            return (head + f" — {why}, so the refiner returns the base map at threshold {self.rule.threshold:g} "
                    "(PRN would not reliably improve these maps; force_prn=True / --force_prn True overrides)")
        if self.forced and self.prn_score < self.base_score + self.margin:
            return head + " — PRN forced although it does not beat the base map by the margin"
        return head + f" — applying {self.rule.name}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rule"], d["prn_rule"], d["base_rule"] = self.rule.name, self.prn_rule.name, self.base_rule.name
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Selection":
        d = dict(d)
        for key in ("rule", "prn_rule", "base_rule"):
            d[key] = Rule.parse(d[key])
        return cls(**d)


def bootstrap_gain_lower(prn_counts: np.ndarray, base_counts: np.ndarray, metric: str = "pooled_iou",
                         confidence: float = 0.9, resamples: int = 2000, seed: int = 0) -> float:
    """A one-sided ``confidence`` lower bound of (PRN score − base score) over the held-out maps.

    ``prn_counts``, ``base_counts``: (n_maps, 3) per-map TP, FP, FN of the two rules. The maps are
    resampled with replacement ``resamples`` times (seeded); each resample's pooled scores give one
    gain; the bound is the (1 − confidence) quantile. A gain that rests on one or two maps gets a
    low bound: with a small selection set, the point estimate alone is a noisy guard.
    """
    n = len(prn_counts)
    if n == 0 or len(base_counts) != n:
        raise InputError("bootstrap_gain_lower: needs per-map counts of both rules for the same maps")
    picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))

    def score(counts: np.ndarray) -> np.ndarray:
        return score_counts(*(counts[picks, k].sum(1) for k in range(3)), metric)

    return float(np.quantile(score(prn_counts) - score(base_counts), 1.0 - confidence))


def choose_rule(scores: RuleScores, *, margin: float = 0.005, force_prn: bool = False,
                fallback_threshold: float | None = None, n_maps: int = 0,
                per_map: tuple[np.ndarray, np.ndarray] | None = None, confidence: float = 0.9,
                n_judge: int = 0) -> Selection:
    """Pick the refiner's rule from held-out ``scores``.

    The best PRN rule is used when it beats the base map at its best global threshold (both tuned on
    the held-out maps of ``scores``) by at least ``margin`` and — given ``per_map`` counts of the two
    rules, which then also give the compared scores (e.g. on other maps, ``n_judge`` of them), see
    :func:`bootstrap_gain_lower` — is better than it with ``confidence``;
    otherwise the base map is returned at ``fallback_threshold`` (default: the held-out best),
    unless ``force_prn``.
    """
    if not margin >= 0:
        raise InputError(f"margin must be >= 0 (a share of the metric, e.g. 0.005 = half a point), got {margin}")
    if not 0 <= confidence < 1:
        raise InputError(f"confidence must be in [0, 1) (0.9 = a 90 % one-sided bound), got {confidence}")
    prn_rule, prn_score = scores.best_prn()
    tau, base_score = scores.sweeps["base"].best(scores.metric)
    base_rule = Rule("base", tau)
    lower = None
    if per_map is not None:
        prn_score, base_score = (float(score_counts(*np.asarray(c).sum(0), scores.metric)) for c in per_map)
        if confidence > 0:
            lower = bootstrap_gain_lower(*per_map, metric=scores.metric, confidence=confidence)
    wins = prn_score >= base_score + margin and (lower is None or lower > 0)
    fell_back = not wins and not force_prn
    rule = Rule("base", tau if fallback_threshold is None else fallback_threshold) if fell_back else prn_rule
    return Selection(rule, prn_rule, prn_score, base_rule, base_score, float(margin), scores.metric, fell_back,
                     bool(force_prn), scores.table(), int(n_maps), float(confidence if lower is not None else 0.0),
                     lower, int(n_judge))


__all__ = ["METRICS", "RULE_HEADS", "SWEEP_THRESHOLDS", "Rule", "RuleScores", "Selection", "ThresholdSweep",
           "apply_rule", "authors_combination", "bootstrap_gain_lower", "choose_rule", "score_counts"]
