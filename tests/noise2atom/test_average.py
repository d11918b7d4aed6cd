"""Averaging a run's kept checkpoints (noise2atom.average) and n2a-train --keep-checkpoints."""
from __future__ import annotations

import pytest
import torch

from noise2atom.average import average_checkpoints, main
from noise2atom.checkpoint import load_checkpoint
from noise2atom.train import TrainOptions, Trainer, kept_checkpoint_path
from noise2atom.train_data import simulated_training_data


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 6-iteration run that keeps its checkpoints at 2, 4 and 6."""
    d = tmp_path_factory.mktemp("run")
    data = simulated_training_data(n_frames=4, size=48, scene="crystal", peak_counts=1.0, seed=1, patch=32)
    opts = TrainOptions(iterations=6, patch=32, batch=2, checkpoint_every=2, keep_checkpoints=True)
    Trainer(options=opts, data=data).run(d / "m.safetensors", progress=False)
    return d


def test_keep_checkpoints_keeps_each_one_beside_the_model(run):
    kept = [kept_checkpoint_path(run / "m.safetensors", it) for it in (2, 4, 6)]
    assert [p.name for p in kept] == ["m.it2.safetensors", "m.it4.safetensors", "m.it6.safetensors"]
    assert [load_checkpoint(p).config.iteration for p in kept] == [2, 4, 6]
    last, final = load_checkpoint(kept[-1]).state_dict, load_checkpoint(run / "m.safetensors").state_dict
    assert all(torch.equal(last[k], final[k]) for k in final)
    first = load_checkpoint(kept[0]).state_dict
    assert any(not torch.equal(first[k], final[k]) for k in final)


def test_average_is_the_mean_of_the_weights_and_records_the_iterations(run, capsys):
    kept = [kept_checkpoint_path(run / "m.safetensors", it) for it in (2, 4, 6)]
    assert main([*map(str, kept), "--out", str(run / "avg.safetensors")]) == 0
    assert "the average of iterations [2, 4, 6]" in capsys.readouterr().out
    avg = load_checkpoint(run / "avg.safetensors")
    assert avg.config.averaged_iterations == [2, 4, 6] and avg.config.iteration == 6
    states = [load_checkpoint(p).state_dict for p in kept]
    for k, v in avg.state_dict.items():
        assert torch.allclose(v, (states[0][k] + states[1][k] + states[2][k]) / 3, atol=1e-6), k
    assert load_checkpoint(kept[0]).config.averaged_iterations is None


def test_average_refuses_one_checkpoint_other_runs_and_missing_files(run, tmp_path, capsys):
    kept = kept_checkpoint_path(run / "m.safetensors", 2)
    with pytest.raises(ValueError, match=r"at least two checkpoints to average \(got 1\)"):
        average_checkpoints([kept], tmp_path / "a.safetensors")
    data = simulated_training_data(n_frames=4, size=48, scene="crystal", peak_counts=1.0, seed=2, patch=32)
    Trainer(options=TrainOptions(iterations=1, patch=32, batch=2), data=data).run(tmp_path / "o.safetensors",
                                                                                  progress=False)
    with pytest.raises(ValueError, match=r"o.safetensors: not from the same run .*training data"):
        average_checkpoints([kept, tmp_path / "o.safetensors"], tmp_path / "a.safetensors")
    assert main([str(kept), str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "a.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m noise2atom.average: error:") and "none.safetensors" in err
    assert not (tmp_path / "a.safetensors").exists()
