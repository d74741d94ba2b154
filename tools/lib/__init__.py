"""The applications' orchestration, not a library API: the demo and its ablation
(:mod:`tools.lib.demo`, driven by `tools/demo.py` and `tools/ablation.py`) and the speed
benchmarks (:mod:`tools.lib.benchmarks`, driven by `tools/benchmark.py`).

These modules sit above the whole `videohpm` package (they may import any of it; nothing in
`videohpm` imports them), are not installed by `pip install .`, and may need the dev extras
(`transformers` for the model benchmark, `scikit-video` for the data benchmark). They are run
from a checkout: `tools/*.py` put the checkout's root on `sys.path` and import `tools.lib`.
"""
