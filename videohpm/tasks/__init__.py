"""Tasks: what each tool runs, as thin modules over the library (`evaluation`, `engine`,
`models`). A task reads a config and a checkpoint, calls library functions and writes its files.

- :mod:`.train` — `tools/train.py`: the engine's `Trainer` with the evaluation hooks (k-NN).
- :mod:`.test` — `tools/test.py`: the multi-view test with its cost line.
- :mod:`.knn` — `tools/knn.py`: weighted k-NN of frozen features.
- :mod:`.predict` — `tools/predict.py`: top-k class names of unlabelled videos.
- :mod:`.extract_features` — `tools/extract_features.py`: frozen features as `.npy` shards.
- :mod:`.export_weights` — `tools/export.py`: the processor config beside the exported weights.
- :mod:`.teacher_fidelity` — `tools/teacher_fidelity.py`: cheap HPM teacher modes vs the full one.
- :mod:`.visualize` — `tools/visualize.py`: HPM's Fig. 2 maps of one clip.
- :mod:`.weights` — a run config's model with a checkpoint's weights (classifier, encoder, export).
- :mod:`.videos`, :mod:`.run_config` — the inputs and the config of a tool run on a checkpoint.

Imported module by module (`from videohpm.tasks.test import run_test`): each pulls in the engine.
"""
