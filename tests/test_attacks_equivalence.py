"""robustvit's numbers equal those of torchattacks / foolbox called directly the usual way.

"Directly" means on the raw classifier that takes *normalised* input, with the library's own
normalisation handling (torchattacks' ``set_normalization_used``, foolbox's ``preprocessing``) and
the same seed, on the initially correct points. robustvit runs the attacks on the [0,1]-input wrapper
instead, so equal numbers also show that nothing is normalised twice.
"""

from __future__ import annotations

import foolbox as fb
import pytest
import torch
import torchattacks
from test_attacks_core import DATA_CONFIG, tiny_cnn, wrapped

from robustvit.attacks.engine import attack_batch
from robustvit.registries import ATTACKS

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = list(DATA_CONFIG["mean"]), list(DATA_CONFIG["std"])




def _points(n: int = 16, seed: int = 6):
    net = tiny_cnn(seed)
    model = wrapped(net)
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[: n // 6] = (y[: n // 6] + 3) % 10  # some initially misclassified points
    return net, model, x, y


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_pgd_equals_torchattacks_pgd_on_the_normalised_model() -> None:
    net, model, x, y = _points()
    eps, steps, seed = 5 / 255, 7, 1234
    ours = attack_batch(ATTACKS.get("pgd-linf")(steps=steps), model, x, y, [eps], seed)

    correct = net(_normalise(x)).argmax(1) == y
    atk = torchattacks.PGD(net.eval(), eps=eps, alpha=0.25 * eps, steps=steps, random_start=True)
    atk.set_normalization_used(mean=MEAN, std=STD)  # inputs and outputs in normalised space
    torch.manual_seed(seed)
    adv = atk(_normalise(x[correct]), y[correct])
    with torch.no_grad():
        direct_robust = int((net(adv).argmax(1) == y[correct]).sum())

    assert ours.clean == int(correct.sum()) and 0 < ours.robust[0] < ours.clean  # a non-trivial case
    assert ours.robust[0] == direct_robust


def test_apgd_ce_equals_torchattacks_apgd() -> None:
    net, model, x, y = _points()
    eps, seed = 5 / 255, 99
    ours = attack_batch(ATTACKS.get("apgd-ce")(steps=10), model, x, y, [eps], seed)

    correct = net(_normalise(x)).argmax(1) == y
    atk = torchattacks.APGD(net.eval(), norm="Linf", eps=eps, steps=10, n_restarts=1, seed=seed, loss="ce")
    atk.set_normalization_used(mean=MEAN, std=STD)
    adv = atk(_normalise(x[correct]), y[correct])
    with torch.no_grad():
        direct_robust = int((net(adv).argmax(1) == y[correct]).sum())
    assert ours.robust[0] == direct_robust < ours.clean


def test_deepfool_equals_foolbox_with_preprocessing() -> None:
    net, model, x, y = _points()
    eps = [0.05, 0.1, 0.2, 0.4]
    ours = attack_batch(ATTACKS.get("deepfool-l2")(), model, x, y, eps, seed=0)

    fmodel = fb.PyTorchModel(net.eval(), bounds=(0, 1), preprocessing={"mean": MEAN, "std": STD, "axis": -3})
    correct = fb.utils.accuracy(fmodel, x, y) * len(x)
    keep = net(_normalise(x)).argmax(1) == y
    attack = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)
    _raw, _clipped, success = attack(fmodel, x[keep], y[keep], epsilons=eps)
    direct_robust = (~success).sum(1).tolist()

    assert ours.clean == round(correct)
    assert ours.robust == direct_robust
    assert direct_robust[0] > direct_robust[-1]  # a non-trivial sweep


def test_autoattack_is_at_most_each_member() -> None:
    _net, model, x, y = _points()
    eps, seed = 5 / 255, 11
    opts = {"steps": 10, "n_target_classes": 3, "n_queries": 100}
    aa = ATTACKS.get("autoattack")(**opts)
    out = attack_batch(aa, model, x, y, [eps], seed)
    members = {
        "apgd-ce": ATTACKS.get("apgd-ce")(steps=10),
        "apgd-t": ATTACKS.get("apgd-t")(steps=10, n_target_classes=3),
        "fab-t": ATTACKS.get("fab-t")(steps=10, n_target_classes=3),
        "square": ATTACKS.get("square")(n_queries=100),
    }
    alone = {k: attack_batch(m, model, x, y, [eps], seed).robust[0] for k, m in members.items()}
    assert 0 < out.robust[0] < out.clean
    assert all(out.robust[0] <= v for v in alone.values()), (out.robust, alone)
    # the cascade's counts: non-increasing, ending at the robust count
    after = [out.extra[f"robust_after_{k}"] for k in members]
    assert after == sorted(after, reverse=True) and after[-1] == out.robust[0]
    # same first member and seed: per-point worst case is never above APGD-CE alone
    assert after[0] == alone["apgd-ce"]
    fast = attack_batch(ATTACKS.get("autoattack")(version="fast", **opts), model, x, y, [eps], seed)
    assert out.robust[0] <= fast.robust[0]
    assert set(fast.extra) == {"robust_after_apgd-ce", "robust_after_apgd-t"}
