"""artefacts: signature, config diff, generator config rebuild, the two generator loaders,
generator export with its prior; configs: nested configs rebuilt from type hints."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from aniportraitgan import artefacts
from aniportraitgan.artefacts import (
    CheckpointManager,
    config_diff,
    export_generator,
    generator_config,
    load_generator,
    model_signature,
    open_generator,
    read_generator_file,
    save_generator,
)
from aniportraitgan.body import PortraitBodyModel
from aniportraitgan.cameras import MainCameraPlacement
from aniportraitgan.configs import Config, UnknownFields, build
from aniportraitgan.errors import InputError
from aniportraitgan.generator import Generator, GeneratorConfig
from aniportraitgan.latents import LatentPrior
from aniportraitgan.training.config import TrainConfig


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Generator(GeneratorConfig.tiny(), PortraitBodyModel.load(device="cpu"))


def test_model_signature_is_stable():
    # Run folders written before the move must still resume: the hash may never change.
    assert model_signature(TrainConfig.preset("tiny").to_dict()) == "49530b9ade27ea1f"
    assert TrainConfig.preset("paper").model_signature() == "41a970640afe1a49"


def test_config_diff_lists_and_caps_differences():
    assert config_diff({"a": 1}, {"a": 1}) == ""
    assert config_diff({"a": 1, "b": 2}, {"a": 3}) == "a: 1 != 3; b: 2 != None"
    assert config_diff({"a": 1, "b": 2}, {"a": 3, "b": 2}, ignore=("a",)) == ""
    many = config_diff({str(i): i for i in range(8)}, {})
    assert many.count("!=") == 6 and many.endswith(" ...")


def test_generator_config_from_a_training_config():
    cfg = TrainConfig.preset("tiny")
    cfg.generator_overrides = {"samples_per_ray": 8}
    assert generator_config(cfg.to_dict()) == GeneratorConfig.tiny(samples_per_ray=8)
    cfg.ablation.no_dp = True  # the paper's "w/o Dp" row
    assert cfg.generator_config() == GeneratorConfig.tiny(samples_per_ray=8, use_dp=False)
    assert generator_config({"generator_preset": "paper"}) == GeneratorConfig.paper()


def test_old_checkpoint_folder_rebuilds_its_generator_config(tiny, tmp_path):
    """A meta.json without generator_config: preset + overrides, Dp off for no_dp."""
    cfg = GeneratorConfig.tiny(use_dp=False)
    G = Generator(cfg, tiny.body)
    weights = {f"G_ema.{k}": v for k, v in G.state_dict().items()}
    train = {"generator_preset": "tiny", "generator_overrides": {}, "ablation": {"no_dp": True}}
    ck = CheckpointManager(tmp_path / "run").save(1, 3, weights, {"step": 3}, train, "sig")
    assert load_generator(ck, body_model=tiny.body).config == cfg


def test_load_generator_keeps_stored_buffers_open_generator_fills_averages(tiny, tmp_path):
    path = export_generator(tmp_path / "g.safetensors", tiny.state_dict(), tiny.config.to_dict())
    raw = load_generator(path, body_model=tiny.body)
    assert not raw.training and not any(p.requires_grad for p in raw.parameters())
    assert not raw.w_avg_radiance.initialized and not raw.w_avg_superres.initialized
    for k, v in tiny.state_dict().items():
        assert torch.equal(raw.state_dict()[k], v), k
    stored = open_generator(path, body_model=tiny.body)
    assert stored.stage == 1 and stored.step is None and stored.source == path
    assert stored.generator.w_avg_radiance.initialized and stored.generator.w_avg_superres.initialized


def test_save_generator_writes_the_prior_and_reads_back(tiny, tmp_path):
    prior = LatentPrior(torch.linspace(-1, 1, 40), torch.full((40,), 0.5), MainCameraPlacement(1.3, 18.0, (0.0, 0.05, 0.01)))
    path = save_generator(tmp_path / "p.safetensors", tiny, stage=2, step=4, prior=prior, train_config={"x": 1})
    _, meta = read_generator_file(path)
    assert meta["stage"] == "2" and meta["step"] == "4" and meta[artefacts.PRIOR_KEY] == prior.to_json()
    stored = open_generator(path, body_model=tiny.body)
    assert stored.stage == 2 and stored.step == 4 and stored.train_config == {"x": 1}
    torch.testing.assert_close(stored.prior.z_id_mean, prior.z_id_mean)


def test_bundled_demo_generator_loads_unchanged():
    stored = open_generator("demo")
    assert stored.source == artefacts.DEMO_CHECKPOINT and stored.stage == 1 and stored.step == 2572
    # the `small` preset (the tiny generator with mesh guidance, at 64 px) with phi grown to
    # 128 x 3 and a 96^3 face template (template_run/), trained with the template's prior
    assert stored.train_config["loss"]["template_smooth"] == 10.0
    cfg = stored.generator.config
    assert cfg.exp_mesh_guided and cfg.exp_input_scale == 0.25 and cfg.radiance_input_scale == 1.0
    # its expression offsets bypass Dp (set on the export: neutral faces render as trained)
    assert cfg.exp_offsets_after_dp
    assert (cfg.radiance_hidden, cfg.radiance_layers, cfg.radiance_template) == (128, 3, 96)
    assert stored.train_config["name"] == "small" and stored.train_config["stage1"]["portrait_resolution"] == 64
    # De's residual is zero in the shipped file (frozen at zero in training): trained, it moved
    # the whole face for any expression (docs/training.md)
    assert not stored.generator.expression.out.weight.any() and not stored.generator.expression.out.bias.any()
    assert stored.prior.source == "training labels"


@dataclass
class _Inner(Config):
    size: tuple[int, int] = (1, 2)
    """A tuple (JSON stores it as a list)."""


@dataclass
class _Outer(Config):
    inner: _Inner = field(default_factory=_Inner)
    """A nested config."""
    maybe: _Inner | None = None
    """An optional nested config."""
    rate: float | None = 0.5
    """An optional number."""


def test_configs_rebuild_nested_fields_from_type_hints():
    cfg = _Outer(_Inner((3, 4)), _Inner((5, 6)), None)
    again = _Outer.from_dict(cfg.to_dict())
    assert again == cfg and isinstance(again.inner, _Inner) and again.maybe.size == (5, 6)
    assert build(_Outer, {"inner": {"size": [7, 8]}}).inner.size == (7, 8)
    assert build(_Outer, {}) == _Outer()
    with pytest.raises(UnknownFields, match=r"unknown _Inner fields: \['bogus'\]"):
        build(_Outer, {"inner": {"bogus": 1}})
    with pytest.raises(InputError, match="JSON object"):
        build(_Outer, [1])
