"""Speed benchmarks behind `tools/benchmark.py` (`model`, `data`) and the machine calibration
figure (`python -m tools.lib.benchmarks.calibrate`, from the checkout's root). Applications, not
library API: they need the dev extras (`pip install -e '.[dev]'`).
"""
