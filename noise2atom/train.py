"""The trainer behind ``n2a-train``: Noise2Atom (GAN + cycle), blind-spot, and hybrid.

``noise2atom`` follows the authors' code (method spec §4): per iteration, one batch
of noisy patches x and simulated clear patches y; 5 WGAN-GP critic updates on that
same batch; one adversarial update of G; one cycle update of G and F with
``MAE(L(F(G(x))), L(x)) + MAE(y, G(F(y)))``. RMSprop(lr 5e-5, alpha 0.9, eps 1e-7),
one optimiser each for D, G (stepped by both G updates) and F; batch 3.

``blindspot`` trains G alone on the noisy frames with masked-pixel
self-supervision (:mod:`noise2atom.blindspot`); Adam, lr 1e-3.

``supervised`` trains G alone on simulated pairs (noisy, noiseless truth) with MSE; only with data
that has a truth (``n2a-train --mixture``, :class:`noise2atom.mixture.MixtureData`).

``hybrid`` is ``noise2atom`` plus ``fidelity_weight`` times the blind-spot loss of
G in the cycle update, so the data keeps the atom prior honest.

``init`` starts G from another checkpoint's weights (a fine-tune; fresh optimiser). With ``ema``
the model saved is a running average of G's weights (decay ``ema`` per iteration), which swings
less from checkpoint to checkpoint than the last weights do; the last weights go to the
``.train.pt`` side file, so ``--resume`` continues both.
"""
from __future__ import annotations

import copy
import math
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from noise2atom.blindspot import blindspot_loss, make_blindspot_batch
from noise2atom.checkpoint import (
    CheckpointError,
    ModelConfig,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
    save_train_state,
    train_state_path,
)
from noise2atom.files import atomic_write, file_sha256
from noise2atom.models import Critic, LowPass, build_generator
from noise2atom.target_sim import TargetPrior
from noise2atom.train_data import TrainingData
from noise2atom.train_options import TrainOptions, TrainRecord

__all__ = ["TrainOptions", "Trainer", "TrainResult", "ResumeError", "kept_checkpoint_path"]


def kept_checkpoint_path(out: str | Path, iteration: int) -> Path:
    """Where ``keep_checkpoints`` keeps the checkpoint of ``iteration``: ``<stem>.it<N>.safetensors``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.it{iteration}{out.suffix}")


class ResumeError(ValueError):
    """``--resume`` cannot continue from the given files."""


def _check_pair(path: str | Path, config: ModelConfig, state: dict[str, Any]) -> None:
    """Raise `ResumeError` unless the checkpoint and its ``.train.pt`` were saved together."""
    cfg = {"size": config.size, "method": config.method, "iteration": config.iteration,
           "fingerprint": config.data.sha256}
    if config.train is not None:
        cfg["patch"] = config.train.patch
    for key, have in cfg.items():
        if state.get(key) != have:
            raise ResumeError(
                f"{path}: the checkpoint and its resume state {train_state_path(path).name} do not "
                f"belong together: {key} is {have!r} in the checkpoint (expected the same in the "
                f"resume state, got {state.get(key)!r}); train again with --overwrite")
    saved = state.get("checkpoint_sha256")
    if saved is not None and saved != file_sha256(path):
        raise ResumeError(
            f"{path}: the checkpoint was replaced after its resume state {train_state_path(path).name} "
            f"was saved (expected checkpoint sha256 {saved[:12]}…, got {file_sha256(path)[:12]}…); "
            f"train again with --overwrite")


@dataclass
class TrainResult:
    """What a run did: iterations reached, per-iteration losses, time, whether interrupted."""

    iteration: int
    losses: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    model_path: Path | None = None
    val_loss: float | None = None  # blind-spot loss on the held-back stripe at the end, if any

    @property
    def its_per_s(self) -> float:
        return len(self.losses) / self.seconds if self.seconds > 0 else float("nan")


class _StopOnSigint:
    """In its ``with`` block, Ctrl-C (SIGINT) sets ``stop`` instead of raising, so that a run ends
    between iterations (main thread only: elsewhere Python cannot install a handler)."""

    def __init__(self) -> None:
        self.stop = False
        self._old_handler: Any = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.stop = True

    def __enter__(self) -> _StopOnSigint:
        try:
            self._old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not in the main thread
            self._old_handler = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old_handler is not None:
            signal.signal(signal.SIGINT, self._old_handler)


class Trainer:
    """Holds the networks, optimisers and RNGs of one training run.

    Parameters
    ----------
    options : TrainOptions
    data : TrainingData
    prior : TargetPrior or None
        The target-domain prior; required by the ``noise2atom`` and ``hybrid`` methods.
    """

    def __init__(self, *, options: TrainOptions, data: TrainingData,
                 prior: TargetPrior | None = None) -> None:
        self.options = o = options
        self.data = data
        self.prior = prior
        self.device = torch.device(o.device)
        self.iteration = 0
        self.elapsed_s = 0.0
        self.rng = np.random.default_rng(o.seed)
        torch.manual_seed(o.seed)
        gan = o.method in ("noise2atom", "hybrid")
        if gan and prior is None:
            raise ValueError(f"method {o.method!r} needs a target prior (got None)")
        self.G = build_generator(o.size).to(self.device).train()
        if o.init is not None:
            self._load_init(o.init)
        self.G_avg = copy.deepcopy(self.G).requires_grad_(False) if o.ema else None
        if gan:
            lr = o.lr or 5e-5
            self.F = build_generator(o.size).to(self.device).train()
            self.D = Critic(patch=o.patch).to(self.device).train()
            self.L = LowPass().to(self.device)

            def rms(params):
                return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7)

            self.opt_G, self.opt_F, self.opt_D = rms(self.G.parameters()), rms(self.F.parameters()), \
                rms(self.D.parameters())
        else:
            self.F = self.D = self.L = None
            self.opt_G = torch.optim.Adam(self.G.parameters(), lr=o.lr or 1e-3)
            self.opt_F = self.opt_D = None
        self.bs_loss = o.bs_loss
        if o.method == "supervised" and not hasattr(data, "sample_pairs"):
            raise ValueError("method 'supervised' needs training data with a truth (got frames "
                             "without one: use --mixture)")
        if self.bs_loss == "auto":
            self.bs_loss = "poisson" if data.counts is not None else "mse"
        if self.bs_loss == "poisson" and data.counts is None:
            raise ValueError("the poisson blind-spot loss needs the detector gain and offset "
                             "(got none: pass --gain and --offset, or use --bs-loss mse)")

        val = data.validation_patches(o.patch) if hasattr(data, "validation_patches") else None
        self._val = torch.from_numpy(val).to(self.device) if val is not None and len(val) else None

    def _load_init(self, path: str) -> None:
        """G's weights from the checkpoint at ``path``, which must hold a generator of this size."""
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            raise ValueError(f"cannot start from {path}: {e}") from e
        if ckpt.config.size != self.options.size:
            raise ValueError(f"cannot start from {path}: it holds a {ckpt.config.size!r} generator "
                             f"(expected {self.options.size!r}, the --model being trained)")
        self.G.load_state_dict(ckpt.state_dict)

    @property
    def deployed(self) -> torch.nn.Module:
        """The generator that is saved as the model: the weight average with ``ema``, else G."""
        return self.G_avg if self.G_avg is not None else self.G

    @torch.no_grad()
    def _update_average(self) -> None:
        if self.G_avg is None:
            return
        for avg, cur in zip(self.G_avg.parameters(), self.G.parameters()):
            avg.lerp_(cur, 1.0 - self.options.ema)
        for avg, cur in zip(self.G_avg.buffers(), self.G.buffers()):
            avg.copy_(cur)

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        """Blind-spot loss of G on the held-back validation patches (fixed masks), or None.

        The same masks every time (a fixed generator), so the values compare over a run.
        """
        if self._val is None or self.options.method not in ("blindspot", "hybrid"):
            return None
        o = self.options
        g = torch.Generator().manual_seed(1234)
        net = self.deployed
        net.eval()
        masked, mask = make_blindspot_batch(self._val.clamp(-1, 1), spacing=o.bs_spacing,
                                            half_width=o.bs_half_width, generator=g)
        loss = blindspot_loss(net(masked), self._val, mask, kind=self.bs_loss,
                              to_counts=self._to_counts)
        net.train()
        return float(loss)

    # ------------------------------------------------------------------ steps
    def _to_counts(self, y: torch.Tensor) -> torch.Tensor:
        gain, offset = self.data.counts
        return (self.data.normalisation.to_raw(y) - offset) / gain

    def _blindspot_term(self, x_target: torch.Tensor) -> torch.Tensor:
        o = self.options
        masked, mask = make_blindspot_batch(x_target.clamp(-1, 1), spacing=o.bs_spacing,
                                            half_width=o.bs_half_width)
        pred = self.G(masked)
        return blindspot_loss(pred, x_target, mask, kind=self.bs_loss, to_counts=self._to_counts)

    def _clear_batch(self, n: int) -> torch.Tensor:
        from noise2atom.target_sim import simulate_clear

        y = simulate_clear(n, self.options.patch, self.prior, self.rng)
        return torch.from_numpy(np.asarray(y, np.float32)[:, None] * 2 - 1).to(self.device)

    @staticmethod
    def _descend(loss: torch.Tensor, *optimisers: torch.optim.Optimizer) -> None:
        """One gradient step of ``loss`` by each of ``optimisers``."""
        for opt in optimisers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimisers:
            opt.step()

    def step(self) -> dict[str, float]:
        """One training iteration; returns its losses."""
        method = self.options.method
        if method == "supervised":
            losses = self._supervised_step()
        elif method == "blindspot":
            losses = self._blindspot_step()
        else:
            losses = self._gan_step()
        self._update_average()
        self.iteration += 1
        return losses

    def _noisy_batch(self, *, gan: bool) -> torch.Tensor:
        """Noisy training patches (unclipped): consecutive frames for the GAN, flipped ones otherwise."""
        o = self.options
        raw = self.data.sample(o.batch, o.patch, self.rng, consecutive=gan, flips=not gan)
        return torch.from_numpy(raw).to(self.device)

    def _supervised_step(self) -> dict[str, float]:
        o = self.options
        x, t = self.data.sample_pairs(o.batch, o.patch, self.rng, flips=True)
        x, t = torch.from_numpy(x).to(self.device), torch.from_numpy(t).to(self.device)
        loss = (self.G(x.clamp(-1, 1)) - t).pow(2).mean()
        self._descend(loss, self.opt_G)
        return {"mse": loss.item()}

    def _blindspot_step(self) -> dict[str, float]:
        loss = self._blindspot_term(self._noisy_batch(gan=False))
        self._descend(loss, self.opt_G)
        return {"bs": loss.item()}

    def _gan_step(self) -> dict[str, float]:
        """Critic updates, an adversarial update of G, then the cycle update of G and F."""
        x_target = self._noisy_batch(gan=True)
        x = x_target.clamp(-1, 1)
        y = self._clear_batch(self.options.batch)
        loss_d, w_dist = self._critic_updates(x, y)
        loss_adv = self._adversarial_update(x)
        out = {"d": loss_d.item(), "w": w_dist.item(), "adv": loss_adv.item()}
        out.update(self._cycle_update(x, y, x_target))
        return out

    def _critic_updates(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """WGAN-GP critic updates on the same batch, G frozen; the last loss and Wasserstein estimate."""
        o, D = self.options, self.D
        with torch.no_grad():
            fake = self.G(x)
        for _ in range(o.critic_steps):
            # Deliberate fix: alpha per sample (standard WGAN-GP); the authors drew it per pixel.
            alpha = torch.rand(x.shape[0], 1, 1, 1, device=self.device)
            xh = (alpha * y + (1 - alpha) * fake).requires_grad_(True)
            # Three critic passes: one batched pass is slower, since the penalty's double
            # backward would then run through the real and fake samples too.
            grad, = torch.autograd.grad(D(xh).sum(), xh, create_graph=True)
            gp = (1 - grad.flatten(1).norm(dim=1)).pow(2).mean()
            w_dist = D(fake).mean() - D(y).mean()
            loss_d = w_dist + o.gp_weight * gp
            self._descend(loss_d, self.opt_D)
        return loss_d, w_dist

    def _adversarial_update(self, x: torch.Tensor) -> torch.Tensor:
        """G against the critic, D frozen (but in training mode: dropout on, as in Keras)."""
        self.D.requires_grad_(False)
        loss_adv = -self.D(self.G(x)).mean()
        self._descend(loss_adv, self.opt_G)
        self.D.requires_grad_(True)
        return loss_adv

    def _cycle_update(self, x: torch.Tensor, y: torch.Tensor, x_target: torch.Tensor) -> dict[str, float]:
        """G and F on both cycles (the noisy side compared after the low-pass filter), plus the
        weighted blind-spot term for ``hybrid``."""
        G, F, L = self.G, self.F, self.L
        loss_cyc = (L(F(G(x))) - L(x)).abs().mean() + (y - G(F(y))).abs().mean()
        total = loss_cyc
        out = {"cyc": loss_cyc.item()}
        if self.options.method == "hybrid":
            fid = self._blindspot_term(x_target)
            total = total + self.options.fidelity_weight * fid
            out["bs"] = fid.item()
        self._descend(total, self.opt_G, self.opt_F)
        return out

    # ------------------------------------------------------------ save / load
    def model_config(self) -> ModelConfig:
        record = TrainRecord(**self.options.model_dump(), bs_loss_used=self.bs_loss)
        return ModelConfig(size=self.options.size, method=self.options.method,
                           normalisation=self.data.normalisation, prior=self.prior,
                           data=self.data.fingerprint, iteration=self.iteration, train=record)

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint and its resume side file (a consistent snapshot)."""
        path = save_checkpoint(path, self.model_config(), self.deployed.state_dict())
        state: dict[str, Any] = {
            "iteration": self.iteration,
            "elapsed_s": float(self.elapsed_s),
            "method": self.options.method,
            "size": self.options.size,
            "patch": self.options.patch,
            "fingerprint": self.data.fingerprint.sha256,
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "opt_G": self.opt_G.state_dict(),
        }
        if self.G_avg is not None:  # the checkpoint holds the average; training goes on from G
            state["G"] = self.G.state_dict()
        if torch.cuda.is_available() and self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.F is not None:
            state.update(F=self.F.state_dict(), D=self.D.state_dict(),
                         opt_F=self.opt_F.state_dict(), opt_D=self.opt_D.state_dict())
        state["checkpoint_sha256"] = file_sha256(path)  # ties this resume state to that very file
        save_train_state(path, state)
        return path

    def resume(self, path: str | Path) -> None:
        """Continue exactly from a checkpoint written by :meth:`save`."""
        try:
            ckpt = load_checkpoint(path)
            state = load_train_state(path)
        except CheckpointError as e:
            raise ResumeError(str(e)) from e
        _check_pair(path, ckpt.config, state)
        o = self.options
        for key, have in (("method", o.method), ("size", o.size), ("patch", o.patch)):
            if state.get(key) != have:
                raise ResumeError(f"{path}: cannot resume, it was trained with {key} "
                                  f"{state.get(key)!r} (got {have!r})")
        if state.get("fingerprint") != self.data.fingerprint.sha256:
            raise ResumeError(f"{path}: cannot resume on other training frames (expected data "
                              f"sha256 {str(state.get('fingerprint'))[:12]}…, got "
                              f"{self.data.fingerprint.sha256[:12]}…)")
        self.G.load_state_dict(state.get("G", ckpt.state_dict))
        if self.G_avg is not None:
            self.G_avg.load_state_dict(ckpt.state_dict)
        self.opt_G.load_state_dict(state["opt_G"])
        if self.F is not None:
            self.F.load_state_dict(state["F"])
            self.D.load_state_dict(state["D"])
            self.opt_F.load_state_dict(state["opt_F"])
            self.opt_D.load_state_dict(state["opt_D"])
        if o.lr is not None:  # --resume --lr: a new learning rate from here on (e.g. a decay stage)
            for opt in (self.opt_G, self.opt_F, self.opt_D):
                for group in (opt.param_groups if opt is not None else ()):
                    group["lr"] = o.lr
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.iteration = int(state["iteration"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))

    # ---------------------------------------------------------------- preview
    @torch.no_grad()
    def write_preview(self, path: str | Path) -> Path:
        """PNG of the first frame's centre crop: noisy | denoised."""
        from PIL import Image

        noisy = np.clip(self.data.preview_frame(), -1, 1)
        net = self.deployed
        net.eval()
        den = net(torch.from_numpy(noisy)[None, None].to(self.device))[0, 0].cpu().numpy()
        net.train()
        pair = np.concatenate([noisy, np.full((noisy.shape[0], 4), 1.0, np.float32), den], axis=1)
        img = np.clip((pair + 1) * 127.5, 0, 255).astype(np.uint8)
        path = Path(path)
        Image.fromarray(img).save(path)
        return path

    # -------------------------------------------------------------------- run
    def run(self, out: str | Path, *, progress: bool = True,
            log: Callable[[str], None] | None = None) -> TrainResult:
        """Train until ``iterations`` or ``minutes`` is reached, or Ctrl-C; save at the end.

        Ctrl-C (SIGINT) is caught between iterations, so the saved checkpoint is a
        consistent snapshot from which ``--resume`` continues exactly.
        """
        from tqdm import tqdm

        o = self.options
        out = Path(out)
        if o.iterations is None and o.minutes is None:
            raise ValueError("give iterations or minutes (got neither)")
        log = log or (lambda s: tqdm.write(s))
        result = TrainResult(iteration=self.iteration, model_path=out)
        with _StopOnSigint() as sigint, tqdm(total=o.iterations, initial=self.iteration, disable=not progress,
                                             unit="it", dynamic_ncols=True, smoothing=0.1) as bar:
            run_start = time.perf_counter()
            self._train_loop(out, result, sigint, bar, log, run_start)
        result.interrupted = sigint.stop
        result.iteration = self.iteration
        result.seconds = time.perf_counter() - run_start  # this run only
        result.val_loss = self.validation_loss()
        self.save(out)
        if o.preview_every:
            self.write_preview(out.with_name(out.stem + ".preview.png"))
        return result

    def _train_loop(self, out: Path, result: TrainResult, sigint: _StopOnSigint, bar: Any,
                    log: Callable[[str], None], t0: float) -> None:
        """Step until the iteration target, the deadline or Ctrl-C; checkpoint and preview on schedule.
        ``elapsed_s`` gains the time since ``t0`` (the start) at each checkpoint and at the end."""
        o = self.options
        deadline = t0 + o.minutes * 60 if o.minutes is not None else math.inf
        while not (sigint.stop or self._reached(deadline)):
            losses = self.step()
            result.losses.append(losses)
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
            if o.checkpoint_every and self.iteration % o.checkpoint_every == 0:
                self.elapsed_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                self._checkpoint(out, result.losses[-o.checkpoint_every:], log)
            if o.preview_every and self.iteration % o.preview_every == 0:
                self.write_preview(out.with_name(out.stem + ".preview.png"))
        self.elapsed_s += time.perf_counter() - t0

    def _reached(self, deadline: float) -> bool:
        """Whether the run has reached its iteration target or its wall-clock ``deadline``."""
        total = self.options.iterations
        return (total is not None and self.iteration >= total) or time.perf_counter() >= deadline

    def _checkpoint(self, out: Path, recent: list[dict[str, float]], log: Callable[[str], None]) -> None:
        """Save (and keep a copy, with ``keep_checkpoints``), then log the mean of the ``recent``
        losses and the validation loss."""
        self.save(out)
        if self.options.keep_checkpoints:  # the very file just written, not a second serialisation
            atomic_write(kept_checkpoint_path(out, self.iteration), lambda tmp: shutil.copyfile(out, tmp))
        mean = {k: np.mean([r[k] for r in recent]) for k in recent[-1]}
        val = self.validation_loss()
        log(f"iteration {self.iteration}: " + ", ".join(f"{k} {v:.4g}" for k, v in mean.items())
            + (f", validation bs {val:.4g}" if val is not None else "") + f"; saved {out}")
