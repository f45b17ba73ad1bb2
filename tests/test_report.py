"""The ViT-vs-CNN report: built from records written through the real store, for any suite shape."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from robustvit.cli import main
from robustvit.errors import UserError
from robustvit.records import CellResult
from robustvit.report import build_report, latest, write_report, write_report_from_store
from robustvit.report.sections import parse_eps
from robustvit.results import headline_paths
from robustvit.store import Store

MODELS = [  # name, sha, family, params, clean accuracy
    ("vit_a", "a" * 16, "vit", 1000, 0.95),
    ("cnn_b", "b" * 16, "cnn", 2000, 0.97),
    ("vit_$x^2$_c", "c" * 16, "vit", 3000, 0.90),
]


def _key(name: str, sha: str, family: str, params: int, suite: str, version: str = "1") -> dict:
    return {"model": name, "model_sha": sha, "family": family, "params": params, "suite": suite,
            "suite_version": version, "config_key": "k", "dataset": "digits"}


def write_suites(store: Store, run_id: str, name: str, sha: str, family: str, params: int, acc: float,
                 suites: tuple[str, ...] = ("clean", "corruption", "adversarial", "ood", "patchprobe")) -> None:
    """Records shaped like the built-in suites' (plus an unknown suite) for one model."""
    def w(suite: str, result: CellResult) -> None:
        store.write_cell(run_id, _key(name, sha, family, params, suite), result)

    gap = 1.0 - acc
    if "clean" in suites:
        w("clean", CellResult("").add("top1", acc, 100, True).add("top5", 1.0, 100, True)
          .add("nll", gap, 100, False).add("ece", gap / 2, 100, False))
    if "corruption" in suites:
        ces = []
        for i, c in enumerate(("gaussian_noise", "fog")):
            errs = [min(1.0, gap + 0.1 * s + 0.01 * i) for s in range(1, 4)]
            for s, e in enumerate(errs, start=1):
                w("corruption", CellResult(f"{c}/{s}").add("error", e, 50, False))
            ce = sum(errs) / 3 / 0.5
            ces.append(ce)
            w("corruption", CellResult(c).add("error", sum(errs) / 3, 150, False).add("ce", ce, 150, False)
              .add("relative_ce", ce - gap, 150, False))
        w("corruption", CellResult("").add("mce", sum(ces) / 2, 300, False).add("relative_mce", 0.5, 300, False)
          .add("mean_error", 0.3, 300, False))
    if "adversarial" in suites:
        for eps in ("1/255", "4/255"):
            r = acc - 10 * parse_eps(eps)
            w("adversarial", CellResult(f"pgd-linf/eps={eps}").add("clean_acc", acc, 100, True)
              .add("robust_acc", r, 100, True).add("success_rate", 1 - r / acc, 100, False))
        w("adversarial", CellResult("checks").add("flag_gradient_masking", float(family == "cnn"), 100, False))
    if "ood" in suites:
        for grp in ("far", "near"):
            for det in ("msp", "energy"):
                a = 0.8 + 0.05 * (det == "energy") + 0.02 * (grp == "far")
                w("ood", CellResult(f"{grp}/textures/{det}").add("auroc", a, 200, True).add("fpr95", 1 - a, 200, False))
                w("ood", CellResult(f"{grp}/{det}").add("auroc", a, 200, True).add("fpr95", 1 - a, 200, False))
    if "patchprobe" in suites:  # a suite the report has never heard of
        w("patchprobe", CellResult("drop=0.5").add("acc", acc - 0.2, 100, True))


def make_store(path: Path, suites: tuple[str, ...] = ("clean", "corruption", "adversarial", "ood", "patchprobe"),
               models: list = MODELS) -> Path:
    with Store(path) as store:
        run = store.start_run({"test": True}, {"robustvit": "0"}, "cpu", 0, "abc123")
        for m in models:
            write_suites(store, run, *m, suites=suites)
    return path


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Collect:
    p = _Collect()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    tmp = tmp_path_factory.mktemp("report")
    store = make_store(tmp / "s.sqlite")
    html_path, md = write_report_from_store(store, tmp / "out", title="ViT <vs> CNN")
    return html_path, md, tmp


def test_report_files_and_figures(full_report: tuple[Path, str, Path]) -> None:
    html_path, md, _ = full_report
    assert html_path.name == "index.html" and html_path.is_file()
    assert (html_path.parent / "summary.md").read_text(encoding="utf-8") == md
    shown = pd.read_csv(html_path.parent / "records.csv", keep_default_na=False)
    assert set(shown["model"]) == {m[0] for m in MODELS}
    page = parse(html_path.read_text(encoding="utf-8"))
    imgs = [a for t, a in page.tags if t == "img"]
    # severity curve, CE + relative CE bars, robust-vs-epsilon, AUROC + FPR95 bars; headline dot plot and the
    # ViT-minus-CNN forest plot (no error-consistency matrix: these records have no per-image outcomes)
    assert len(imgs) == 8
    assert all(a["src"].startswith("data:image/png;base64,") and a.get("alt") for a in imgs)
    assert not any(t == "script" for t, _ in page.tags)
    assert not any(a.get("src", "").startswith(("http:", "https:")) or a.get("href", "").startswith("http")
                   for _, a in page.tags)


def test_report_sections_follow_the_records(full_report: tuple[Path, str, Path]) -> None:
    html = full_report[0].read_text(encoding="utf-8")
    for suite in ("clean", "corruption", "adversarial", "ood", "patchprobe"):
        assert re.search(rf'<h2 id="suite-\d+">{suite}</h2>', html)
    # the unknown suite gets its generic table; the headline includes its metric
    assert "patchprobe/drop=0.5/acc" in html
    # provenance: checkpoint hash, run date, suite version in the page and as tooltips on numbers
    assert "a" * 16 in html and "suite version v1" in html
    assert re.search(r'title="vit_a \(sha a{16}\): run \S+ at \d{4}-\d\d-\d\dT', html)
    # the raised gradient-masking flag is shown prominently (top box)
    top = html.index('class="warnings"')
    assert top < html.index('id="summary"') and "gradient masking" in html[top:html.index('id="summary"')]


def test_family_summary_values(tmp_path: Path) -> None:
    records = Store(make_store(tmp_path / "s.sqlite", suites=("clean",)), readonly=True).records()
    report = build_report(records)
    (group,) = report.groups
    table = group.table.set_index("metric")
    assert list(report.models) == ["vit_a", "vit_$x^2$_c", "cnn_b"]  # ViTs first
    assert table.loc["clean/top1", "vit mean (2)"] == "0.9250"
    assert table.loc["clean/top1", "vit_a [vit]"] == "0.9500 (no interval)"  # no outcomes stored
    assert table.loc["clean/top1", "n"] == 100
    # the difference is shown, but without per-image outcomes nothing is declared better
    assert table.loc["clean/top1", "ViT − CNN [95% CI]"] == "-0.0450 (no interval)"
    assert table.loc["clean/top1", "verdict"] == "tie"
    assert table.loc["clean/nll", "better"] == "lower"
    comps = report.results.comparisons.set_index("metric")
    assert comps.loc["clean/top1", "diff"] == pytest.approx(0.925 - 0.97)
    assert set(comps["verdict"]) == {"tie"}


def test_markdown_summary(full_report: tuple[Path, str, Path]) -> None:
    md = full_report[1]
    assert md.startswith("# ViT &lt;vs> CNN")  # user text escaped for GitHub's HTML rendering
    assert "## ⚠ Sanity-check warnings (1)" in md and "**cnn_b**" in md
    assert "| corruption/mce | lower |" in md and "| clean/top1 | higher |" in md
    assert "| ood/far/energy/auroc | higher |" in md  # no group means stored: the shallowest primary metrics
    assert "corruption/gaussian_noise/3/error" not in md  # deep cells stay in the HTML tables
    assert "Full report with figures" in md


def test_latest_values_win_and_old_checkpoints_drop(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        r1 = store.start_run({}, {}, "cpu", 0, None)
        store.write_cell(r1, _key("m", "old", "vit", 1, "clean"), CellResult("").add("top1", 0.5, 10, True))
        store.write_cell(r1, _key("m", "old", "vit", 1, "clean", "0"), CellResult("").add("top5", 0.9, 10, True))
        r2 = store.start_run({}, {}, "cpu", 0, None)
        store.write_cell(r2, _key("m", "new", "vit", 1, "clean"), CellResult("").add("top1", 0.7, 10, True))
        records = store.records()
    sel = latest(records)
    assert list(sel["path"]) == ["clean/top1"] and sel["value"].tolist() == [0.7]  # old checkpoint's top5 dropped
    runs = latest(records, all_runs=True)
    assert sorted(runs["value"].tolist()) == [0.5, 0.7, 0.9]


@pytest.mark.parametrize("suites", [("clean",), ("corruption",), ("ood",), ("patchprobe",), ("adversarial", "ood")])
def test_report_degrades_gracefully(tmp_path: Path, suites: tuple[str, ...]) -> None:
    make_store(tmp_path / "s.sqlite", suites=suites, models=MODELS[:2])
    html_path, md = write_report_from_store(tmp_path / "s.sqlite", tmp_path / "out")
    html = html_path.read_text(encoding="utf-8")
    for suite in suites:
        assert f">{suite}</h2>" in html
    assert "ViT vs CNN" in md


def test_corruption_without_severity_cells_has_no_severity_figure(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        run = store.start_run({}, {}, "cpu", 0, None)
        for name, sha, fam, params, _ in MODELS[:2]:
            store.write_cell(run, _key(name, sha, fam, params, "corruption"), CellResult("").add("mce", 0.7, 10, False))
        records = store.records()
    report = build_report(records)
    assert [f.title for s in report.sections for f in s.figures] == []


def test_headline_takes_shallow_levels_and_primary_metric() -> None:
    rows = pd.DataFrame({
        "cell": ["", "", "a", "a", "b", "b"] + [f"att/eps={i}/255" for i in range(10) for _ in (0, 1)],
        "metric": ["mce", "relative_mce", "ce", "error", "ce", "error"] + ["clean_acc", "robust_acc"] * 10,
    })
    rows["path"] = ["s/" + (c + "/" if c else "") + m for c, m in zip(rows["cell"], rows["metric"], strict=True)]
    assert headline_paths(rows.iloc[:6]) == ["s/mce", "s/relative_mce"]
    deep = headline_paths(rows.iloc[6:])
    assert len(deep) == 10 and all(p.endswith("/robust_acc") for p in deep)  # all of them: no cap
    rows["kind"] = "corruption"  # a known kind: its entry in the one headline list
    assert headline_paths(rows.iloc[:6]) == ["s/mce", "s/relative_mce"]


def test_model_names_are_escaped(tmp_path: Path) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    make_store(tmp_path / "s.sqlite", suites=("clean", "ood"), models=[(evil, "e" * 16, "vit", 1, 0.9), MODELS[1]])
    html_path, md = write_report_from_store(tmp_path / "s.sqlite", tmp_path / "out")
    html = html_path.read_text(encoding="utf-8")
    page = parse(html)
    assert not any(t == "script" for t, _ in page.tags)
    assert [a["src"][:5] for t, a in page.tags if t == "img"] == ["data:"] * len([t for t, _ in page.tags if t == "img"])
    assert evil in "".join(page.text)  # shown as text
    assert "<script>" not in md and "&lt;script>" in md


def test_no_records_is_a_user_error(tmp_path: Path) -> None:
    Store(tmp_path / "empty.sqlite").close()
    with pytest.raises(UserError, match="no records to report"):
        write_report(Store(tmp_path / "empty.sqlite", readonly=True).records(), tmp_path / "out")


def test_report_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = make_store(tmp_path / "s.sqlite", suites=("clean",))
    out = tmp_path / "reports" / "cli"
    assert main(["report", "--store", str(store), "--out", str(out), "--family", "vit"]) == 0
    printed = capsys.readouterr().out
    assert f"report written to {out / 'index.html'}" in printed and "| clean/top1 | higher |" in printed
    assert "cnn_b" not in (out / "summary.md").read_text(encoding="utf-8")
    assert main(["report", "--store", str(tmp_path / "missing.sqlite"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_and_gate_never_import_torch() -> None:
    code = ("import sys, robustvit.report, robustvit.gate, robustvit.report.gate_outputs, "
            "robustvit.commands.report, robustvit.commands.leaderboard, robustvit.commands.gate; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
