"""The generic registry: decorator and lazy entries, aliases, clashes, did-you-mean, entry points."""

from __future__ import annotations

import textwrap

import pytest

from robustvit.errors import UserError
from robustvit.registry import Registry, RegistryError


def test_register_decorator_alias_and_lookup() -> None:
    reg: Registry = Registry("things", entry_points=False)

    @reg.register("alpha", "a")
    def alpha() -> str:
        return "A"

    assert reg.get("alpha") is alpha
    assert reg.get("a") is alpha
    assert reg.canonical("a") == "alpha"
    assert "a" in reg and "zzz" not in reg
    assert reg.names() == ["alpha"]


def test_lazy_entry_is_imported_on_first_use_only() -> None:
    reg: Registry = Registry("things", {"dumps": "json:dumps", "broken": "no_such_module_xyz:thing"}, entry_points=False)
    import json

    assert reg.get("dumps") is json.dumps
    with pytest.raises(RegistryError, match="no_such_module_xyz"):
        reg.get("broken")


def test_clash_names_both_origins() -> None:
    reg: Registry = Registry("things", {"alpha": "json:dumps"}, entry_points=False)
    with pytest.raises(RegistryError) as exc:
        reg.register("beta", "alpha", obj="json:loads")
    message = str(exc.value)
    assert "alpha" in message and "json:loads" in message and "built-in" in message
    with pytest.raises(RegistryError):
        reg.register("alpha", obj="json:loads")


def test_unknown_name_did_you_mean() -> None:
    reg: Registry = Registry("corruptions", {n: "json:dumps" for n in ("gaussian_noise", "shot_noise", "fog")},
                             entry_points=False)
    with pytest.raises(UserError) as exc:
        reg.get("gausian_noise")
    assert "did you mean 'gaussian_noise'" in str(exc.value)
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="known: fog, gaussian_noise, shot_noise"):
        reg.get("qqqq")


def test_fnmatch_listing() -> None:
    reg: Registry = Registry("models", {n: "json:dumps" for n in ("vit_small", "vit_base", "resnet50")},
                             entry_points=False)
    assert reg.names("vit_*") == ["vit_base", "vit_small"]
    assert reg.names("*net*") == ["resnet50"]


def test_lazy_tables_are_read_on_first_lookup() -> None:
    reg: Registry = Registry("datasets", tables=["robustvit.data.catalog:BUILTINS"], entry_points=False)
    assert reg._entries == {}
    assert "digits" in reg.names()


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """A real installed distribution (dist-info on sys.path) declaring a robustvit.models entry point."""
    (tmp_path / "my_rv_plugin.py").write_text("def tiny():\n    return 'tiny model'\n")
    dist = tmp_path / "my_rv_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-rv-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""
        [robustvit.models]
        tiny_plugin = my_rv_plugin:tiny
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    return tmp_path


def test_entry_point_plugins_load_lazily(plugin_dist, monkeypatch) -> None:
    monkeypatch.delenv("ROBUSTVIT_NO_PLUGINS", raising=False)
    reg: Registry = Registry("models")
    assert "tiny_plugin" in reg.names()
    origin, _ = reg.describe("tiny_plugin")
    assert "my-rv-plugin" in origin
    assert reg.get("tiny_plugin")() == "tiny model"


def test_entry_points_can_be_turned_off(plugin_dist, monkeypatch) -> None:
    monkeypatch.setenv("ROBUSTVIT_NO_PLUGINS", "1")
    reg: Registry = Registry("models")
    assert "tiny_plugin" not in reg.names()


def test_entry_point_clash_with_builtin_is_reported(plugin_dist, monkeypatch) -> None:
    monkeypatch.delenv("ROBUSTVIT_NO_PLUGINS", raising=False)
    reg: Registry = Registry("models", {"tiny_plugin": "json:dumps"})
    with pytest.raises(RegistryError, match="my_rv_plugin:tiny.*clashes.*built-in"):
        reg.names()


def test_missing_optional_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torchattacks", None)  # as if the attacks extra were not installed
    monkeypatch.delitem(sys.modules, "robustvit.attacks.torchattacks_adapters", raising=False)
    reg: Registry = Registry("attacks", {"x": "robustvit.attacks.torchattacks_adapters:PGD"}, entry_points=False)
    with pytest.raises(RegistryError, match=r"pip install 'robustvit\[attacks\]'"):
        reg.get("x")
