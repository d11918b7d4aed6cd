"""The quality benchmark's report: markdown tables, a verdict computed from the numbers, figures.

Writes where `bench.quality.simulated` says (``--out``, default bench/results/quality.md and PNGs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.quality.scoring import Scores, fit_to_truth

__all__ = ["CaseResult", "MethodResult", "render_markdown", "save_css_figure", "save_grid_figure", "verdict"]

# Families used by the verdict: which rows are "BM3D (user)" and which are in-series n2a models.
BM3D_USER = "bm3d"
N2A_IN_SERIES = ("n2a-noise2atom", "n2a-blindspot", "n2a-hybrid")
FINDS_ATOMS_F1 = 0.5  # "finds atoms": mean F1 at least this
SHORT = {
    "noisy": "noisy (raw)", "truth": "truth", "raw": "raw", "gaussian": "Gaussian (best sigma)",
    "median": "median (best size)", "bm3d": "BM3D (sigma from data)", "bm3d-oracle": "BM3D (oracle sigma)",
    "n2a-default": "n2a default model", "n2a-noise2atom": "n2a lite noise2atom (in-series)",
    "n2a-blindspot": "n2a blindspot (in-series)", "n2a-hybrid": "n2a lite hybrid (in-series)",
}


@dataclass(kw_only=True)
class MethodResult:
    """One denoiser's row in one case."""

    key: str  # stable id, e.g. "gaussian", "bm3d", "n2a-blindspot"
    label: str  # what the table shows
    scores: Scores
    training: str = "–"
    note: str = ""


@dataclass(kw_only=True)
class CaseResult:
    """All rows of one (dose, scene) case, plus what the figures need."""

    dose: float
    scene: str
    settings: dict
    methods: list[MethodResult] = field(default_factory=list)
    crops: dict[str, np.ndarray] = field(default_factory=dict)  # key -> display crop in [0, 1]

    @property
    def title(self) -> str:
        return f"dose {self.dose:g} counts at an atom's peak, {self.scene}"

    def get(self, key: str) -> MethodResult | None:
        return next((m for m in self.methods if m.key == key), None)


def _f(v: float, nd: int) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def _table(case: CaseResult) -> list[str]:
    head = ("| denoiser | PSNR (dB) | SSIM to truth | CSS (ours) | atom F1 | precision | recall "
            "| position error (px) | false atoms in vacuum per 100 nm² (per frame) | ms / frame | training |")
    lines = [head, "|" + "---|" * 11]
    best_ssim = max(m.scores.ssim for m in case.methods)
    best_f1 = max(m.scores.f1 for m in case.methods)
    for m in case.methods:
        s = m.scores
        ssim_s = _f(s.ssim, 3)
        f1_s = _f(s.f1, 3)
        if s.ssim == best_ssim:
            ssim_s = f"**{ssim_s}**"
        if s.f1 == best_f1:
            f1_s = f"**{f1_s}**"
        fa = f"{_f(s.false_per_100nm2, 0)} ({_f(s.n_false_vacuum, 1)})"
        lines.append(
            f"| {m.label} | {_f(s.psnr_db, 2)} | {ssim_s} | {_f(s.css, 3)} | {f1_s} | {_f(s.precision, 3)} "
            f"| {_f(s.recall, 3)} | {_f(s.rmse_px, 2)} | {fa} | {_f(s.ms_per_frame, 1)} | {m.training} |"
        )
    return lines


def _winner(case: CaseResult, attr: str) -> tuple[MethodResult, float]:
    ranked = sorted(case.methods, key=lambda m: getattr(m.scores, attr), reverse=True)
    margin = getattr(ranked[0].scores, attr) - getattr(ranked[1].scores, attr) if len(ranked) > 1 else float("nan")
    return ranked[0], margin


def verdict(cases: list[CaseResult]) -> list[str]:
    """Sentences computed from the numbers: winners per case and the issue's n2a-vs-BM3D test."""
    out: list[str] = []
    for case in cases:
        ws, ms = _winner(case, "ssim")
        wf, mf = _winner(case, "f1")
        out.append(
            f"- {case.title}: best SSIM {ws.label} ({ws.scores.ssim:.3f}, +{ms:.3f} over the next); "
            f"best atom F1 {wf.label} ({wf.scores.f1:.3f}, +{mf:.3f})."
        )
    out.append("")
    out.append(
        "n2a trained on the series' own earlier frames vs BM3D (sigma from the data), at the lowest dose "
        f"where either finds atoms (mean F1 ≥ {FINDS_ATOMS_F1}); a pass needs higher SSIM, higher F1 and no "
        "more false atoms in vacuum than BM3D:"
    )
    out.append("")
    for scene in sorted({c.scene for c in cases}):
        sc = sorted((c for c in cases if c.scene == scene), key=lambda c: c.dose)
        for key in N2A_IN_SERIES:
            if not any(c.get(key) for c in sc):
                continue
            chosen = None
            for c in sc:
                n2a, bm = c.get(key), c.get(BM3D_USER)
                if n2a is None or bm is None:
                    continue
                if max(n2a.scores.f1, bm.scores.f1) >= FINDS_ATOMS_F1:
                    chosen = (c, n2a, bm)
                    break
            if chosen is None:
                out.append(f"- {scene}, {key}: neither it nor BM3D finds atoms at any dose.")
                continue
            c, n2a, bm = chosen
            a, b = n2a.scores, bm.scores
            ok_s, ok_f = a.ssim > b.ssim, a.f1 > b.f1
            ok_v = not (a.false_per_100nm2 > b.false_per_100nm2)
            passed = ok_s and ok_f and ok_v
            trained = f" (training: {n2a.training})" if n2a.training not in ("", "–") else ""
            out.append(
                f"- {scene}, {n2a.label}{trained} at dose {c.dose:g}: SSIM {a.ssim:.3f} vs {b.ssim:.3f} "
                f"({a.ssim - b.ssim:+.3f}), F1 {a.f1:.3f} vs {b.f1:.3f} ({a.f1 - b.f1:+.3f}), false atoms "
                f"{_f(a.false_per_100nm2, 0)} vs {_f(b.false_per_100nm2, 0)} per 100 nm² → "
                f"**{'passes' if passed else 'does not pass'}**."
            )
    return out


def cases_from_json(data: list[dict]) -> list[CaseResult]:
    """Rebuild the cases (without image crops) from quality.json's ``cases``."""
    fields = set(Scores.__dataclass_fields__)
    cases = []
    for c in data:
        case = CaseResult(dose=c["dose"], scene=c["scene"], settings=c["settings"])
        for m in c["methods"]:
            sc = Scores(**{k: v for k, v in m.items() if k in fields})
            case.methods.append(MethodResult(key=m["key"], label=m["label"], scores=sc, training=m["training"]))
        cases.append(case)
    return cases


def render_markdown(
    cases: list[CaseResult],
    *,
    header: list[str],
    figures: list[tuple[str, str]],
    notes: list[str],
) -> str:
    """The whole quality.md: header, verdict, one table per case, figures, method notes."""
    lines = ["# Denoising quality against known truth", ""]
    lines += header + [""]
    lines += ["## Verdict (generated from the tables below)", ""]
    lines += verdict(cases) + [""]
    for case in cases:
        lines += [f"## {case.title}", ""]
        if case.settings:
            lines += ["Settings: " + "; ".join(f"{k} = {v}" for k, v in case.settings.items()) + ".", ""]
        lines += _table(case) + [""]
    if figures:
        lines += ["## Figures", ""]
        for caption, path in figures:
            lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    if notes:
        lines += ["## How the numbers were made", ""] + notes + [""]
    return "\n".join(lines)


def pick_crop(vacuum_mask: np.ndarray, size: int) -> tuple[slice, slice]:
    """The square window (on a coarse grid) closest to half vacuum, half matter: both show in a crop."""
    h, w = vacuum_mask.shape
    size = min(size, h, w)
    step = max(1, size // 4)
    best, best_d = (0, 0), np.inf
    for r in range(0, h - size + 1, step):
        for c in range(0, w - size + 1, step):
            d = abs(float(vacuum_mask[r:r + size, c:c + size].mean()) - 0.4)
            if d < best_d:
                best, best_d = (r, c), d
    return slice(best[0], best[0] + size), slice(best[1], best[1] + size)


def display_crop(out: np.ndarray, truth: np.ndarray, crop: tuple[slice, slice]) -> np.ndarray:
    """An output on the truth's scale (affine fit over the whole frame), cropped, clipped to [0, 1]."""
    return np.clip(fit_to_truth(out, truth)[crop], 0.0, 1.0).astype(np.float32)


def save_grid_figure(cases: list[CaseResult], path: Path, *, title: str) -> None:
    """Rows: cases (scenes); columns: noisy, truth, then each denoiser; the same crop across a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["noisy", "truth"] + [m.key for m in cases[0].methods if m.key != "raw"]
    labels = dict(SHORT)
    fig, axes = plt.subplots(len(cases), len(keys), figsize=(1.9 * len(keys), 2.1 * len(cases) + 0.4),
                             squeeze=False)
    for i, case in enumerate(cases):
        for j, k in enumerate(keys):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if k in case.crops:
                ax.imshow(case.crops[k], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if i == 0:
                ax.set_title(_wrap(labels.get(k, k)), fontsize=7)
            if j == 0:
                ax.set_ylabel(case.scene, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _wrap(s: str, width: int = 22) -> str:
    words, lines, cur = s.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    lines.append(cur)
    return "\n".join(lines)


def save_css_figure(cases: list[CaseResult], path: Path) -> None:
    """CSS (ours) between consecutive scored frames, one panel per case, one line per denoiser."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    doses = sorted({c.dose for c in cases})
    scenes = sorted({c.scene for c in cases})
    fig, axes = plt.subplots(len(scenes), len(doses), figsize=(4.2 * len(doses), 3.2 * len(scenes)),
                             squeeze=False, sharey=True)
    for case in cases:
        ax = axes[scenes.index(case.scene), doses.index(case.dose)]
        for m in case.methods:
            curve = m.scores.css_curve
            ax.plot(np.arange(1, len(curve) + 1), curve, marker=".", label=SHORT.get(m.key, m.label))
        ax.set_title(case.title, fontsize=8)
        ax.set_xlabel("scored frame t (CSS of t vs t-1)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("CSS (ours)", fontsize=8)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    ncol = 3 if len(doses) > 1 else 2
    rows = -(-len(labels) // ncol)
    legend_h = 0.25 * rows + 0.2  # inches
    fig.set_size_inches(fig.get_size_inches()[0], fig.get_size_inches()[1] + legend_h)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7)
    fig.tight_layout(rect=(0, legend_h / fig.get_size_inches()[1], 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
