"""The one registry helper (memorization/base/registry.py) and what uses it: a name registered
twice and an unknown name are one line each; every file of a registering folder is imported, so
a new one needs no edit; a network registers itself with its schema."""

from __future__ import annotations

import sys

import pytest
from hydra.core.config_store import ConfigStore

from memorization.base.errors import ConfigError
from memorization.base.registry import Registry


def test_a_name_twice_and_an_unknown_name_are_one_line_each():
    reg = Registry("widget", "widget=a")
    reg.register("a")(1)
    reg.add("b", 2)
    assert reg.lookup("a") == 1
    with pytest.raises(ConfigError, match=r"^widget 'a' registered twice$"):
        reg.add("a", 3)
    with pytest.raises(ConfigError) as err:
        reg.lookup("c")
    assert str(err.value) == "unknown widget 'c'; choose one of: a, b (e.g. widget=a)"


def test_import_all_finds_a_new_file_without_an_edit(tmp_path, monkeypatch):
    pkg = tmp_path / "toyreg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from memorization.base.registry import Registry, import_all\n"
        "FOUND = Registry('toy', 'toy=one')\n"
        "import_all(__name__, __path__, skip=['skipped'])\n")
    for name in ("one", "two"):
        (pkg / f"{name}.py").write_text(
            f"from toyreg import FOUND\nFOUND.register('{name}')('{name}!')\n")
    (pkg / "skipped.py").write_text("raise RuntimeError('not imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import toyreg

        assert dict(toyreg.FOUND) == {"one": "one!", "two": "two!"}
    finally:
        for mod in [m for m in sys.modules if m == "toyreg" or m.startswith("toyreg.")]:
            del sys.modules[mod]


def test_the_packages_registries_hold_every_file():
    from memorization.data import SOURCES
    from memorization.models import MODELS
    from memorization.noise import CORRUPTIONS

    assert {"digits", "synthetic", "mnist", "cifar10", "tiny_imagenet"} <= set(SOURCES)
    assert {"label_flip", "gaussian", "shuffled_pixels", "structured"} <= set(CORRUPTIONS)
    assert set(MODELS) == {"mlp", "cnn", "alexnet", "small_alexnet", "small_inception"}
    with pytest.raises(ConfigError, match="unknown noise type 'flip'; choose one of: "):
        CORRUPTIONS.lookup("flip")


def test_a_network_registers_itself_with_its_schema():
    from dataclasses import dataclass

    from torch import nn

    from memorization.models import MODELS, register_model
    from memorization.models.probes import ProbedModel

    @dataclass
    class ToyNetConfig:
        width: int = 4

    @register_model("toy_net_of_this_test", ToyNetConfig)
    class ToyNet(ProbedModel):
        def __init__(self, in_shape, num_classes, width=4):
            super().__init__()
            self.fc = nn.Linear(width, num_classes)

    try:
        assert MODELS["toy_net_of_this_test"] is ToyNet
        node = ConfigStore.instance().repo["schema"]["model"]["toy_net_of_this_test.yaml"].node
        assert node._target_ == f"{__name__}.{ToyNet.__qualname__}"
        assert node.width == 4
        assert node._get_node("in_shape")._value() == "${data.shape}"
        with pytest.raises(ConfigError, match="model 'toy_net_of_this_test' registered twice"):
            register_model("toy_net_of_this_test", ToyNetConfig)(ToyNet)
    finally:
        MODELS.pop("toy_net_of_this_test", None)
        ConfigStore.instance().repo["schema"]["model"].pop("toy_net_of_this_test.yaml", None)
