"""On the embedded OOD sets every detector beats chance on far-OOD for both zoo models, and a
shuffled-label control does not.

"Beats chance" is significant: the AUROC of the pooled far-OOD sets exceeds 0.5 by three standard
deviations of the AUROC of a detector without skill (Mann-Whitney null, sigma^2 =
(n_id + n_ood + 1) / (12 n_id n_ood)); the control (ID/OOD membership shuffled) stays within them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustvit.context import FeatureCache, SuiteContext
from robustvit.metrics.ood import auroc
from robustvit.models import load_model
from robustvit.ood.stats import LinearHead
from robustvit.registries import DETECTORS
from robustvit.suites.ood import DEFAULT_DETECTORS, OODSuite

LIMIT = 300  # ID test images (the detectors fit on the whole train split)
FAR = {"faces": "ood_faces", "textures": {"name": "ood_textures", "n": 150}, "photos": {"name": "ood_photos", "n": 150}}


pytestmark = pytest.mark.usefixtures("one_thread")


def _context(model_name: str) -> SuiteContext:
    return SuiteContext(model=load_model(model_name), suite="ood", dataset="digits", device=torch.device("cpu"),
                        batch_size=128, limit=LIMIT, feature_cache=FeatureCache(disk=False), show_progress=False)


@pytest.fixture(scope="module", params=["zoo_vit", "zoo_resnet"])
def scored(request: pytest.FixtureRequest) -> dict:
    """Per detector: (ID test scores, pooled far-OOD scores) and the suite's cells, for one zoo model."""
    ctx = _context(request.param)
    suite = OODSuite(near=[], far=FAR, sanity=[])
    cells = {r.cell: {m.metric: m.value for m in r.metrics} for r in suite.run(ctx, suite.cells())}
    train, test = ctx.features("digits", split="train"), ctx.features()
    far = [ctx.features(spec) for spec in suite.sets["far"].values()]
    head = LinearHead.from_model(ctx.model, train.features, train.logits)
    assert head is not None  # both zoo models end in a linear layer
    scores = {}
    for name in DEFAULT_DETECTORS:
        det = DETECTORS.get(name)()
        if det.needs_fit:
            det.fit(train.features, train.logits, train.labels, head=head)
        ood = torch.cat([det.score(f.features, f.logits) for f in far])
        scores[name] = (det.score(test.features, test.logits).double().numpy(), ood.double().numpy())
    return {"model": request.param, "cells": cells, "scores": scores}


def _sigma(n_id: int, n_ood: int) -> float:
    return math.sqrt((n_id + n_ood + 1) / (12 * n_id * n_ood))


@pytest.mark.parametrize("detector", DEFAULT_DETECTORS)
def test_far_ood_beats_chance(scored: dict, detector: str) -> None:
    s_id, s_ood = scored["scores"][detector]
    value = auroc(s_id, s_ood)
    assert value > 0.5 + 3 * _sigma(len(s_id), len(s_ood)), f"{scored['model']} {detector}: far AUROC {value:.3f}"
    for name in FAR:  # and every far set on its own, as the suite reports it
        assert scored["cells"][f"far/{name}/{detector}"]["auroc"] > 0.5


@pytest.mark.parametrize("detector", DEFAULT_DETECTORS)
def test_shuffled_label_control_does_not(scored: dict, detector: str) -> None:
    s_id, s_ood = scored["scores"][detector]
    pooled = np.concatenate([s_id, s_ood])
    perm = np.random.default_rng(0).permutation(len(pooled))
    value = auroc(pooled[perm[: len(s_id)]], pooled[perm[len(s_id) :]])
    assert abs(value - 0.5) < 3 * _sigma(len(s_id), len(s_ood)), f"{scored['model']} {detector}: control {value:.3f}"


def test_id_accuracy_reported(scored: dict) -> None:
    accs = {v["id_acc"] for v in scored["cells"].values()}
    assert len(accs) == 1 and accs.pop() > 0.9
