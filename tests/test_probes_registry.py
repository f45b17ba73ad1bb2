"""Registry-parametrised: every registered probe runs through the probes suite and the runner on the
zoo ViT and ResNet and on timm's tiny test_vit / test_resnet, storing the cells it plans (ViT-only
probes skip the CNNs with a note), with intervals on its accuracy cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustvit.config import ModelConfig, RunConfig, build_suite
from robustvit.registries import PROBES
from robustvit.runner import Event, build_model, execute
from robustvit.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")

#: small settings per probe, so that each runs in seconds; a new probe runs with its defaults
SMALL = {
    "patch_drop": {"fractions": [0.0, 0.5], "orderings": ["random", "salient_first"]},
    "patch_shuffle": {"grids": [1, 2]},
    "cutout": {"fractions": [0.0, 0.2]},
    "fourier": {"images": 4, "stride": 8},
    "spectrum": {"images": 4, "steps": 5},
    "attention": {"samples": 1},
    "interaction": {"images": 2, "grid": 2},
}
MODELS = [ModelConfig("zoo_vit"), ModelConfig("zoo_resnet"),
          ModelConfig("timm:test_vit", pretrained=False, num_classes=10),
          ModelConfig("timm:test_resnet", pretrained=False, num_classes=10)]


@pytest.mark.parametrize("probe", PROBES.names())
def test_every_probe_runs_on_every_family(probe: str, tmp_path: Path) -> None:
    suite = build_suite("probes", {"probes": [probe], "params": {probe: SMALL.get(probe, {})}}, "probes")
    cfg = RunConfig(models=MODELS, suites=[suite], data="digits", limit=8, batch_size=8, device="cpu")
    events: list[Event] = []
    with Store(tmp_path / "s.sqlite") as store:
        execute(cfg, store, show_progress=False, on_event=events.append)
        records = store.records()
    for mcfg in MODELS:
        model = build_model(mcfg)
        planned = set(suite.suite.cells_for(model))
        stored = set(records.loc[records["model"] == mcfg.label, "cell"])
        if suite.suite.probes[0].skip_reason(model) is not None:
            assert not planned and any(e.kind == "skipped" and e.model == mcfg.label for e in events)
            continue
        assert planned and planned <= stored, (mcfg.label, sorted(planned - stored)[:5])
    accuracy = records[records["metric"].isin(["top1", "error"]) & (records["n"] > 0)]
    assert accuracy.empty or accuracy["ci_low"].notna().all()


def test_shipped_probes_suite_file_validates() -> None:
    from robustvit.config import load_suite_file

    root = Path(__file__).resolve().parents[1]
    cfg = load_suite_file(root / "suites" / "probes.toml", {"data": "digits"})  # its ImageNet folder is the user's
    (probes,) = cfg.suites
    assert [p.name for p in probes.suite.probes] == ["patch_drop", "patch_shuffle", "cutout", "fourier", "attention",
                                                     "interaction", "spectrum"]
    quick = load_suite_file(root / "suites" / "quickstart.toml")
    assert "probes" in [s.name for s in quick.suites]
