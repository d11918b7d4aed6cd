"""n2a's benchmarks: speed, latency and quality, measured on this machine; results in bench/results/.

Run from the repository root as modules; each make target runs one entry point:

======================  ===========================  ==============================================
make target             entry point                  writes (bench/results/)
======================  ===========================  ==============================================
bench-engines           python -m bench.engines      engines-cpu.md (back ends side by side)
bench-latency           python -m bench.latency      latency-cpu.md (n2a-stream end to end)
bench-guard             python -m bench.guard        guard-cpu.md (CSS + fidelity guard cost)
bench-learn             python -m bench.learn        learn-cpu.md, .png (learning while streaming)
bench-train-speed       python -m bench.train_speed  train-speed-cpu.md (n2a-train iterations/s)
bench-viewer            python -m bench.viewer       viewer-cpu.md (GUI-thread cost, keep-up)
bench-quality           python -m bench.quality      quality*.md/.json/.png (see bench.quality)
gpu-check               python3 -m bench.gpu_check   gpu-check-gpu.md and the *-gpu results
gpu-check-plan          ... --dry-run                nothing (prints the plan)
======================  ===========================  ==============================================

Also: ``python -m bench.viewer_screenshot`` (docs/viewer.png). ``bench.harness`` holds what they
share (paths, a model to time, a client of n2a-stream's output). ``bench`` may import any package.
"""
