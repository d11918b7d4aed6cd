"""Checkpoints: round trip, normalisation, resume side file, and every bad case."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from noise2atom.checkpoint import (
    CONFIG_KEY,
    CONFIG_VERSION,
    CheckpointError,
    ModelConfig,
    Normalisation,
    default_model_path,
    fingerprint_frames,
    load_checkpoint,
    load_generator,
    load_train_state,
    model_id,
    save_checkpoint,
    save_train_state,
    train_state_path,
)
from noise2atom.models import build_generator
from noise2atom.target_sim import TargetPrior
from noise2atom.train_options import TrainOptions, TrainRecord


def make_config(**over) -> ModelConfig:
    frames = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16)
    kw = dict(size="lite", method="blindspot", normalisation=Normalisation(lo=1.0, hi=500.0),
              prior=TargetPrior(pitch_px=8.0), iteration=7,
              data=fingerprint_frames([frames], sources=["a.tif"], meta={"dwell_us": 2.0}))
    kw.update(over)
    return ModelConfig(**kw)


@pytest.fixture
def saved(tmp_path):
    g = build_generator("lite")
    path = save_checkpoint(tmp_path / "m.safetensors", make_config(), g.state_dict())
    return path, g


def test_round_trip(saved):
    path, g = saved
    ckpt = load_checkpoint(path)
    assert ckpt.config == make_config().model_copy(update={"created": ckpt.config.created})
    assert ckpt.config.meta == {"dwell_us": 2.0}
    for k, v in g.state_dict().items():
        assert torch.equal(ckpt.state_dict[k], v)
    config, g2 = load_generator(path)
    assert not g2.training
    x = torch.rand(1, 1, 24, 24) * 2 - 1
    with torch.no_grad():
        assert torch.equal(g.eval()(x), g2(x))
    assert config.iteration == 7


def test_no_temp_files_left(saved):
    path, _ = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]


def test_model_id_is_short_and_content_dependent(saved, tmp_path):
    path, g = saved
    mid = model_id(path)
    assert len(mid) == 12 and mid == model_id(path)
    other = save_checkpoint(tmp_path / "o.safetensors", make_config(iteration=8), g.state_dict())
    assert model_id(other) != mid
    assert model_id(load_checkpoint(path)) != model_id(load_checkpoint(other))
    assert model_id(make_config(iteration=1)) != model_id(make_config(iteration=2))


def test_normalisation_maps_and_clips():
    n = Normalisation(lo=10.0, hi=30.0)
    y = n.to_model(np.array([[0, 10, 20, 30, 99]], dtype=np.uint16))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[-1, -1, 0, 1, 1]])
    np.testing.assert_allclose(n.from_model(y), [[0, 0, 0.5, 1, 1]])
    t = n.to_model(torch.tensor([15.0, 25.0]))
    np.testing.assert_allclose(t.numpy(), [-0.5, 0.5])
    with pytest.raises(ValueError, match="lo < hi"):
        Normalisation(lo=3.0, hi=3.0)


def test_normalisation_from_frames_is_robust_to_hot_pixels():
    rng = np.random.default_rng(0)
    frames = rng.normal(100, 10, size=(4, 64, 64)).astype(np.float32)
    frames[0, 0, 0] = 65535  # a hot pixel must not set the scale
    frames[1, 0, 0] = np.nan
    n = Normalisation.from_frames(frames)
    assert 50 < n.lo < 80 and 120 < n.hi < 150
    with pytest.raises(ValueError, match="no finite"):
        Normalisation.from_frames(np.full((2, 4, 4), np.nan))
    with pytest.raises(ValueError, match="no intensity range"):
        Normalisation.from_frames(np.ones((2, 4, 4)))


def test_fingerprint_depends_on_content():
    a = np.zeros((2, 8, 8), np.uint16)
    b = a.copy()
    b[0, 0, 0] = 1
    assert fingerprint_frames([a]).sha256 != fingerprint_frames([b]).sha256
    assert fingerprint_frames([a]).shapes == [[2, 8, 8]]


def test_config_forbids_unknown_fields():
    with pytest.raises(ValueError, match="extra"):
        make_config(colour="blue")


# ---- config versions: nested, validated models; version 1 still loads ------------------------

#: A version-1 config exactly as n2a 0.1 wrote it: ``prior`` and ``train`` free dicts.
V1_PRIOR = {"pitch_px": 6.0, "occupancy": 0.11, "occupancy_spread": 1 / 3, "sigma_px": [1.0, 3.16],
            "intensities": [1.0, 4.0], "integer_intensities": True, "jitter_px": 1.0,
            "rotation_deg": [0.0, 0.0], "mode": "lattice", "cluster_fill": 0.95}
V1_TRAIN = {"method": "hybrid", "size": "lite", "iterations": 4, "minutes": None, "patch": 32, "batch": 2,
            "seed": 0, "device": "cpu", "lr": None, "critic_steps": 1, "gp_weight": 10.0,
            "fidelity_weight": 2.0, "bs_loss": "auto", "bs_spacing": 8, "bs_half_width": 2,
            "preview_every": 0, "checkpoint_every": 0, "bs_loss_used": "mse"}


def _v1_config(**over) -> dict:
    raw = {"version": 1, "size": "lite", "method": "hybrid", "normalisation": {"lo": 1.0, "hi": 500.0},
           "prior": V1_PRIOR, "iteration": 4, "created": "2026-11-30T22:19:15+00:00",
           "n2a_version": "0.1.0", "train": V1_TRAIN,
           "data": {"sha256": "0" * 64, "shapes": [[2, 16, 16]], "sources": ["a.tif"], "meta": {}}}
    raw.update(over)
    return raw


def _write_v1_checkpoint(path, raw) -> None:
    """The old layout: config JSON in the safetensors metadata, generator weights as the tensors."""
    state = {k: v.contiguous() for k, v in build_generator("lite").state_dict().items()}
    save_file(state, str(path), metadata={CONFIG_KEY: json.dumps(raw)})


def _stored_config(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()[CONFIG_KEY])


def test_version1_checkpoint_loads_into_the_nested_models(tmp_path):
    path = tmp_path / "v1.safetensors"
    _write_v1_checkpoint(path, _v1_config())
    config, _ = load_generator(path)
    assert config.version == CONFIG_VERSION == 2
    assert config.prior == TargetPrior(pitch_px=6.0)
    assert isinstance(config.train, TrainRecord)
    assert (config.train.patch, config.train.fidelity_weight, config.train.bs_loss_used) == (32, 2.0, "mse")
    # saving it again writes version 2, which reads back equal
    again = save_checkpoint(tmp_path / "again.safetensors", config, load_checkpoint(path).state_dict)
    assert _stored_config(again)["version"] == 2
    assert load_checkpoint(again).config == config


def test_version1_without_training_record_or_prior(tmp_path):
    """Hand-made version-1 checkpoints had ``train: {}`` and ``prior: null``; the
    ``bs_loss_used`` key came later than the others."""
    path = tmp_path / "v1.safetensors"
    old_train = {k: v for k, v in V1_TRAIN.items() if k != "bs_loss_used"}
    _write_v1_checkpoint(path, _v1_config(prior=None, train={}, method="blindspot"))
    config = load_checkpoint(path).config
    assert config.prior is None and config.train is None
    _write_v1_checkpoint(path, _v1_config(train=old_train))
    assert load_checkpoint(path).config.train.bs_loss_used is None


def test_bundled_default_model_loads():
    path = default_model_path()
    if "N2A_MODEL" in __import__("os").environ:
        pytest.skip("N2A_MODEL points elsewhere; this test reads the bundled model")
    assert _stored_config(path)["version"] == 2  # version 1 files: test_version1_checkpoint_loads...
    config, generator = load_generator(path)
    assert config.version == 2 and config.method == "supervised" and config.prior is None
    assert config.size == "lite-dilated" and config.data.meta["simulator"] == "noise2atom.mixture"
    assert config.train.method == "supervised" and config.train.bs_loss_used == "mse"
    with torch.no_grad():
        assert generator(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_version2_round_trip_keeps_the_nested_models(tmp_path):
    record = TrainRecord(**TrainOptions(method="noise2atom", patch=128, batch=3).model_dump(),
                         bs_loss_used="mse")
    prior = TargetPrior(pitch_px=9.5, sigma_px=(1.2, 2.0), mode="cluster")
    config = make_config(method="noise2atom", prior=prior, train=record)
    path = save_checkpoint(tmp_path / "v2.safetensors", config, build_generator("lite").state_dict())
    stored = _stored_config(path)
    assert stored["version"] == 2
    assert stored["prior"]["pitch_px"] == 9.5 and stored["prior"]["mode"] == "cluster"
    assert stored["train"]["patch"] == 128 and stored["train"]["bs_loss_used"] == "mse"
    back = load_checkpoint(path).config
    assert back == config
    assert isinstance(back.prior, TargetPrior) and back.prior.sigma_px == (1.2, 2.0)
    assert isinstance(back.train, TrainRecord) and back.train.batch == 3


def test_unknown_prior_field_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"prior\.pitch\n.*Extra inputs are not permitted"):
        make_config(prior={"pitch": 8.0})
    path = tmp_path / "bad.safetensors"
    _write_v1_checkpoint(path, _v1_config(prior={**V1_PRIOR, "pitch": 8.0}))
    with pytest.raises(CheckpointError,
                       match=r"invalid n2a config \(got: prior\.pitch: Extra inputs are not permitted "
                             r"\(got 8\.0\)\)"):
        load_checkpoint(path)


def test_bad_training_record_is_refused_naming_the_field(tmp_path):
    path = tmp_path / "bad.safetensors"
    _write_v1_checkpoint(path, _v1_config(train={**V1_TRAIN, "colour": "blue", "patch": 4}))
    with pytest.raises(CheckpointError, match=r"train\.patch: .*greater than or equal to 16 \(got 4\).*"
                                              r"train\.colour: Extra inputs are not permitted \(got 'blue'\)"):
        load_checkpoint(path)
    _write_v1_checkpoint(path, _v1_config(prior={**V1_PRIOR, "sigma_px": [3.0, 1.0]}))
    with pytest.raises(CheckpointError, match=r"prior: .*sigma_px must be \(low, high\)"):
        load_checkpoint(path)


# ---- bad files -------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_not_a_safetensors_file(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(b"this is a TIFF, honest" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(p)


def test_truncated_file(saved):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)


def test_safetensors_without_config(tmp_path):
    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(p), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"no n2a config.*{CONFIG_KEY}.*got keys"):
        load_checkpoint(p)


def _write_raw_config(path, raw):
    save_file({"w": torch.zeros(2)}, str(path), metadata={CONFIG_KEY: json.dumps(raw)})


def test_unknown_version(tmp_path):
    raw = json.loads(make_config().model_dump_json())
    raw["version"] = 3
    _write_raw_config(tmp_path / "v3.safetensors", raw)
    with pytest.raises(CheckpointError, match=r"unknown checkpoint version \(expected 1 or 2; got 3\)"):
        load_checkpoint(tmp_path / "v3.safetensors")


def test_invalid_config(tmp_path):
    raw = json.loads(make_config().model_dump_json())
    raw["size"] = "huge"
    raw["normalisation"] = {"lo": 5, "hi": 1}
    _write_raw_config(tmp_path / "bad.safetensors", raw)
    with pytest.raises(CheckpointError, match="invalid n2a config.*size.*normalisation"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_weights_do_not_match_architecture(tmp_path):
    # lite weights under a config that says "paper"
    g = build_generator("lite")
    p = save_checkpoint(tmp_path / "mix.safetensors", make_config(size="paper"), g.state_dict())
    with pytest.raises(CheckpointError, match="do not match the 'paper' generator.*expected.*got"):
        load_generator(p)
    state = g.state_dict()
    state["enc1.0.0.weight"] = torch.zeros(16, 1, 5, 5)
    p = save_checkpoint(tmp_path / "shape.safetensors", make_config(), state)
    with pytest.raises(CheckpointError, match=r"wrong shape.*expected \(16, 1, 3, 3\); got \(16, 1, 5, 5\)"):
        load_generator(p)


# ---- resume side file and default path --------------------------------------------------------

def test_train_state_round_trip_without_pickle(tmp_path):
    model = tmp_path / "m.safetensors"
    rng = np.random.default_rng(3)
    state = {"iteration": 5, "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
             "opt": torch.optim.RMSprop(build_generator("lite").parameters()).state_dict()}
    p = save_train_state(model, state)
    assert p == train_state_path(model) == tmp_path / "m.train.pt"
    back = load_train_state(model)
    assert back["iteration"] == 5
    assert back["numpy_rng"] == rng.bit_generator.state
    assert torch.equal(back["torch_rng"], state["torch_rng"])


def test_train_state_refuses_arbitrary_objects(tmp_path):
    import fractions  # any class outside weights_only's allow-list stands for "arbitrary object"

    torch.save({"x": fractions.Fraction(1, 3)}, train_state_path(tmp_path / "m.safetensors"))
    with pytest.raises(CheckpointError, match="not a readable training-resume"):
        load_train_state(tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_train_state(tmp_path / "other.safetensors")


def test_default_model_path(monkeypatch, tmp_path):
    monkeypatch.delenv("N2A_MODEL", raising=False)
    assert default_model_path().parts[-2:] == ("models", "default.safetensors")
    monkeypatch.setenv("N2A_MODEL", str(tmp_path / "mine.safetensors"))
    assert default_model_path() == tmp_path / "mine.safetensors"


@pytest.mark.parametrize("module", ["noise2atom.checkpoint", "noise2atom.train_options", "noise2atom.average",
                                    "noise2atom.scaling", "noise2atom.ensemble"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
