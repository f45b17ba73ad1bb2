"""Stability metrics (Hendrycks & Dietterich 2019, ImageNet-P): hand-computed flip probabilities, top-5 and
Zipf distances, the first-frame rule of noise sequences, and agreement with ImageNet-P/test.py's code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from robustvit.stability.metrics import flip_probability, normalised, pairs, rank_distances, sequence_metrics


def _onehot(classes: list[list[int]], c: int = 10) -> torch.Tensor:
    """(N, T, C) logits whose top-1 is the given class of each frame (the other classes in index order)."""
    logits = -torch.arange(c, dtype=torch.float32).expand(len(classes), len(classes[0]), c).clone()
    for i, seq in enumerate(classes):
        for t, k in enumerate(seq):
            logits[i, t, k] = 10.0
    return logits


def test_pairs_follow_the_reference_rule() -> None:
    first, second = pairs(5, 1)
    assert first.tolist() == [0, 1, 2, 3] and second.tolist() == [1, 2, 3, 4]
    first, second = pairs(6, 2)
    assert first.tolist() == [0, 1, 2, 3] and second.tolist() == [2, 3, 4, 5]
    first, second = pairs(4, 3, noise=True)  # noise: every frame against the first, whatever the difficulty
    assert first.tolist() == [0, 0, 0] and second.tolist() == [1, 2, 3]
    assert len(pairs(3, 3)[0]) == 0


def test_a_constant_model_never_flips_and_keeps_its_ranking() -> None:
    logits = torch.randn(1, 1, 10).expand(4, 31, 10)
    for noise in (False, True):
        for d in (1, 2, 3):
            m = sequence_metrics(logits, d, noise)
            assert m["fp"].tolist() == [0.0] * 4
            assert m["t5d"].tolist() == [0.0] * 4  # identical rankings: distance 0
            assert m["zipf"].tolist() == [0.0] * 4


def test_a_model_that_changes_its_answer_every_frame_always_flips() -> None:
    logits = _onehot([[t % 3 for t in range(31)], [(t * 7) % 10 for t in range(31)]])
    assert sequence_metrics(logits, 1)["fp"].tolist() == [1.0, 1.0]
    # at stride 3 the first sequence repeats itself (t % 3), the second still changes
    assert sequence_metrics(logits, 3)["fp"].tolist() == [0.0, 1.0]


def test_noise_sequences_compare_with_the_first_frame_by_hand() -> None:
    logits = _onehot([[0, 1, 1, 1], [2, 2, 5, 2]])
    # noise: frame 0 against frames 1, 2, 3 -> [3/3, 1/3]; consecutive frames -> [1/3, 2/3]
    assert sequence_metrics(logits, 1, noise=True)["fp"].tolist() == pytest.approx([1.0, 1 / 3])
    assert sequence_metrics(logits, 1, noise=False)["fp"].tolist() == pytest.approx([1 / 3, 2 / 3])
    # stride 2 pairs (0, 2), (1, 3)
    assert sequence_metrics(logits, 2)["fp"].tolist() == pytest.approx([0.5, 0.5])
    # predicted classes can be passed instead of logits
    assert flip_probability(torch.tensor([[0, 1, 1, 1]]), *pairs(4, 1, noise=True)).tolist() == [1.0]


def test_top5_and_zipf_distance_by_hand() -> None:
    c = 8
    a = torch.tensor([8.0, 7, 6, 5, 4, 3, 2, 1])  # ranking 0 1 2 3 4 5 6 7
    b = torch.tensor([7.0, 8, 6, 5, 4, 3, 2, 1])  # classes 0 and 1 swap places
    d = torch.tensor([1.0, 2, 3, 4, 5, 6, 7, 8])  # the ranking reversed
    t5d, zipf = rank_distances(torch.stack([a, b, d])[None], torch.tensor([0, 0]), torch.tensor([1, 2]))
    # swap: sigma = (2, 1, 3, 4, ...): |0 - 1| + |1 - 0| = 2; Zipf: |1 - 1/2| / 1 + |1/2 - 1| / 2 = 0.75
    # reversed: sigma(k) = 9 - k: top-5 terms |k-1 - min(8-k, 5)| = 5, 4, 3, 1, 1 = 14
    sigma = 9 - np.arange(1, c + 1)
    zipf_rev = float(np.sum(np.abs(1 / np.arange(1, c + 1) - 1 / sigma) / np.arange(1, c + 1)))
    assert t5d.tolist() == [pytest.approx((2 + 14) / 2)]
    assert zipf.tolist() == [pytest.approx((0.75 + zipf_rev) / 2)]


def test_ties_are_ranked_by_class_index_as_rankdata_ordinal() -> None:
    a = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # tie: class 0 ranks before class 1
    b = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # class 0 drops to rank 3, class 2 rises to 2
    t5d, _ = rank_distances(torch.stack([a, b])[None], torch.tensor([0]), torch.tensor([1]))
    # sigma = ranks in b of (0, 1, 2, 3, 4) = (3, 1, 2, 4, 5): |0-2| + |1-0| + |2-1| + 0 + 0 = 4
    assert t5d.tolist() == [4.0]
    assert flip_probability(torch.stack([a, b])[None], torch.tensor([0]), torch.tensor([1])).tolist() == [1.0]


def _reference(logits: np.ndarray, noise: bool, difficulty: int) -> dict[str, list[float]]:
    """ImageNet-P/test.py's flip_prob and ranking_dist, restated (per video instead of their mean)."""
    c = logits.shape[-1]
    cum = np.cumsum(np.asarray([0] + [1] * 5 + [0] * (c - 1 - 5)))
    recip = 1.0 / np.arange(1, c + 1)
    out: dict[str, list[float]] = {"fp": [], "t5d": [], "zipf": []}
    for video in logits:
        preds = video.argmax(1)
        ranks = [rankdata(-frame, method="ordinal").astype(int) for frame in video]
        step = 1 if noise else difficulty
        flips, near, far = [], [], []
        for i in range(step):
            prev, inv = preds[i], np.argsort(ranks[i])
            for pred, rank in zip(preds[i::step][1:], ranks[i::step][1:]):
                sigma = rank[inv]
                flips.append(int(prev != pred))
                near.append(np.sum(np.abs(cum[:5] - cum[sigma - 1][:5])))
                far.append(np.sum(np.abs(recip - recip[sigma - 1]) * recip))
                if not noise:
                    prev, inv = pred, np.argsort(rank)
        out["fp"].append(np.mean(flips))
        out["t5d"].append(np.mean(near))
        out["zipf"].append(np.mean(far))
    return out


@pytest.mark.parametrize("classes", [10, 1000])
def test_matches_imagenet_p_test_py(classes: int) -> None:
    rng = np.random.default_rng(classes)
    logits = rng.integers(0, 4, size=(6, 13, classes)).astype(np.float32)  # many ties
    logits[:3] += rng.normal(size=(3, 13, classes)).astype(np.float32)
    for noise in (False, True):
        for d in (1, 2, 3):
            ref = _reference(logits, noise, d)
            got = sequence_metrics(torch.from_numpy(logits), d, noise)
            for metric in ("fp", "t5d", "zipf"):
                np.testing.assert_allclose(got[metric].numpy(), ref[metric], rtol=1e-12, atol=1e-12)


def test_flip_rate_sums_difficulties_like_ce() -> None:
    assert normalised({1: 0.1}, {1: 0.2}) == pytest.approx(0.5)
    assert normalised({1: 0.1, 2: 0.3}, {1: 0.2, 2: 0.6, 3: 9.0}) == pytest.approx(0.4 / 0.8)
    assert math.isnan(normalised({1: 0.1}, {1: 0.0}))  # a perfectly stable baseline normalises nothing
    assert math.isnan(normalised({1: 0.1, 2: 0.1}, {1: 0.2}))
