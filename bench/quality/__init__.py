"""Denoising quality against truth, next to what microscopists use today (Gaussian, median, BM3D).

``python -m bench.quality`` (``make bench-quality``) runs the two benchmarks below in turn; each also
runs alone with all its options. Results go to ``bench/results/`` (and ``docs/quality-grid-real.png``).

Entry points:

- ``simulated``      on n2a's own STEM simulator, in-series training -> quality.md, .json, figures
- ``external``       on material n2a did not make (abTEM, third-party, real) -> quality-external.md, .json
- ``training_curve`` quality vs minutes of training -> training_curve.md, .json, .png
- ``default_model``  one checkpoint (default: bundled) vs the best Gaussian -> default_model_eval.md
- ``abtem_fields``   simulates the abTEM fields once -> bench/data/abtem_*.npz

Helpers (measure nothing): ``series`` (simulated cases), ``denoisers`` (the baselines and the engine
wrapper), ``scoring`` (SSIM/PSNR after an affine fit, atom F1, false atoms), ``training`` (n2a-train
in process), ``report`` / ``external_report`` (markdown and figures), ``external_data`` (loaders).
"""
