"""A checkpoint never runs code: every tool that reads one refuses a file whose pickle calls
`os.system`, says what the file holds and what to do, and nothing runs.

Each tool is run in process through its `main()`: if the file were unpickled, the command in it
would create the marker file of the test."""
import os

import pytest
import torch

from tests.evaluation.helpers import load_tool
from videohpm.config import load_config
from videohpm.engine.build import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FT = os.path.join(ROOT, "configs/test/finetune_tiny.yaml")
PRE = os.path.join(ROOT, "configs/test/pretrain_hpm_tiny.yaml")


class _RunsACommand:
    """Pickles as a call of `os.system(command)`: what unpickling such a file executes."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


_tool = load_tool


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from videohpm.data import make_demo_data

    root = tmp_path_factory.mktemp("demo")
    d = make_demo_data(str(root), tiny=True, formats=("k400",), images=False)
    videos = d.video_dirs["k400"]
    video = os.path.join(videos, sorted(v for v in os.listdir(videos) if v.startswith("demo"))[0])
    return {"lists": d.lists["k400"], "videos": videos, "video": video}


def _evil(tmp_path, cfg_path):
    """A real model's weights plus one object that runs `touch <marker>` when unpickled."""
    marker = tmp_path / "PWNED"
    model = build_model(load_config(cfg_path))
    path = tmp_path / "evil.pth"
    torch.save({"model": model.state_dict(), "epoch": 1, "extra": _RunsACommand(f"touch {marker}")}, path)
    return path, marker


TOOLS = {
    "test": lambda ck, d, tmp: ("test", ["--config", FT, f"checkpoint={ck}", "--output-dir", str(tmp / "out"),
                                         f"data.test={d['lists']['test']}", f"data.data_root={d['videos']}"]),
    "knn": lambda ck, d, tmp: ("knn", ["--config", PRE, f"checkpoint={ck}", "--output-dir", str(tmp / "out"),
                                       f"data.train={d['lists']['train']}", f"data.val={d['lists']['val']}",
                                       "data.num_classes=8", f"data.data_root={d['videos']}"]),
    "visualize": lambda ck, d, tmp: ("visualize", ["--config", PRE, f"checkpoint={ck}", "--input", d["video"],
                                                   "--out", str(tmp / "out")]),
    "predict": lambda ck, d, tmp: ("predict", ["--config", FT, f"checkpoint={ck}", d["video"],
                                               "--output-dir", str(tmp / "out")]),
    "extract_features": lambda ck, d, tmp: ("extract_features", ["--config", PRE, f"checkpoint={ck}", d["video"],
                                                                 "--output-dir", str(tmp / "out")]),
    "finetune": lambda ck, d, tmp: ("train", ["--config", FT, f"model.pretrained={ck}",
                                              f"data.train={d['lists']['train']}", f"data.data_root={d['videos']}",
                                              f"train.output_dir={tmp / 'out'}"]),
}
CONFIG_OF = {"test": FT, "predict": FT, "finetune": FT, "knn": PRE, "visualize": PRE, "extract_features": PRE}


TOOL_FILE = {"test": "test", "knn": "knn", "visualize": "visualize", "predict": "predict",
             "extract_features": "extract_features", "finetune": "train"}


@pytest.mark.parametrize("tool", [t for t, f in TOOL_FILE.items() if os.path.isfile(os.path.join(ROOT, "tools", f + ".py"))])
def test_tool_refuses_a_checkpoint_that_runs_code(tool, demo, tmp_path, capsys):
    evil, marker = _evil(tmp_path, CONFIG_OF[tool])
    name, argv = TOOLS[tool](evil, demo, tmp_path)
    rc = _tool(name).main(argv)
    err = capsys.readouterr().err
    assert not marker.exists(), f"tools/{name}.py ran the command pickled in the checkpoint"
    assert rc == 2, err[-2000:]
    # what the file holds, why it is refused, and what to do
    assert "'posix.system'" in err and "weights_only=True" in err and "weights.pth" in err, err[-2000:]
    assert "Traceback" not in err
    if tool == "finetune":  # refused before anything was written
        assert not (tmp_path / "out").exists()
