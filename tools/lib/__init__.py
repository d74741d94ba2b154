"""The applications' orchestration, not a library API: the stage runner (:mod:`tools.lib.stages`),
the demo (:mod:`tools.lib.demo`), its ablation (:mod:`tools.lib.ablation`) and report
(:mod:`tools.lib.report`), the label-scarce protocols (:mod:`tools.lib.label_scarce`), the
data-efficiency benchmark (:mod:`tools.lib.ssl_benchmark`) and the speed benchmarks
(:mod:`tools.lib.benchmarks`); docs/ARCHITECTURE.md lists each file and their order.

These modules sit above the whole `videohpm` package (they may import any of it; nothing in
`videohpm` imports them), are not installed by `pip install .`, and may need the dev extras
(`transformers` for the model benchmark, `scikit-video` for the data benchmark). They are run
from a checkout: `tools/*.py` put the checkout's root on `sys.path` and import `tools.lib`.
"""
