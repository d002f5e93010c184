from dataclasses import dataclass, field
from typing import Literal

import pytest

from essence.core.config import Config, Presets, require_positive, require_range


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Config):
    m: int = 16
    width: float = 1.0
    head: Literal["mlp", "linear"] = "mlp"
    codes: tuple[int, ...] = (1, 2)
    name: str | None = None

    def __post_init__(self):
        require_positive(self, "m", "width")


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Config):
    lr: float = 0.1
    nesterov: bool = False

    def __post_init__(self):
        require_range(self, "lr", 0.0, 10.0)


@dataclass(frozen=True, kw_only=True)
class ExpConfig(Config):
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0


PRESETS = Presets({"tiny": lambda: ExpConfig(model=ModelConfig(m=2)), "quick": ExpConfig,
                   "paper": lambda: ExpConfig(model=ModelConfig(m=64))})


def test_overrides_are_parsed_by_type():
    cfg = ExpConfig().with_overrides(["model.m=64", "optim.lr=3e-4", "optim.nesterov=true", "model.head=linear",
                                      "model.codes=4,5,6", "model.name=none", "seed=7"])
    assert cfg.model.m == 64 and isinstance(cfg.model.m, int)
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.optim.nesterov is True
    assert cfg.model.head == "linear"
    assert cfg.model.codes == (4, 5, 6)
    assert cfg.model.name is None
    assert cfg.seed == 7
    # the original is frozen and unchanged
    assert ExpConfig().model.m == 16


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.m=abc", "model.m expects int, got 'abc'"),
        ("model.mm=3", "unknown config key 'model.mm'; did you mean one of 'model.m'"),
        ("optim.lr", "must look like key=value"),
        ("model.head=mpl", "did you mean 'mlp'?"),
        ("optim.nesterov=maybe", "use true/false"),
        ("model=3", "is a section"),
    ],
)
def test_override_errors_are_clear(override, message):
    with pytest.raises(ValueError) as err:
        ExpConfig().with_overrides([override])
    assert message in str(err.value)


def test_validation_runs_after_override():
    with pytest.raises(ValueError, match=r"model.m must be a positive integer, got -3"):
        ExpConfig().with_overrides(["model.m=-3"])
    with pytest.raises(ValueError, match=r"optim.lr must be in \[0.0, 10.0\], got 11.0"):
        ExpConfig().with_overrides(["optim.lr=11"])


def test_round_trip_through_dict_and_json(tmp_path):
    cfg = PRESETS.build("paper", ["model.codes=7,8"])
    cfg.to_json(tmp_path / "c.json")
    import json

    again = ExpConfig.from_dict(json.loads((tmp_path / "c.json").read_text()))
    assert again == cfg
    with pytest.raises(ValueError, match="unknown config key ExpConfig.sed; did you mean 'seed'"):
        ExpConfig.from_dict({"sed": 1})


def test_presets():
    assert PRESETS.build("tiny").model.m == 2
    assert PRESETS.build("quick", {"model.m": 5}).model.m == 5
    with pytest.raises(ValueError, match="did you mean 'quick'"):
        PRESETS.build("quik")
    with pytest.raises(ValueError, match="missing"):
        Presets({"tiny": ExpConfig})


def test_keys_lists_leaves():
    assert "model.m" in ExpConfig().keys() and "optim.lr" in ExpConfig().keys()
    assert ExpConfig().get("optim.lr") == 0.1
