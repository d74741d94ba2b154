"""Shared helpers of the engine tests."""
from tests.evaluation.helpers import load_tool


def train_main(argv, capsys) -> tuple:
    """Run `tools/train.py`'s main in this process: `(exit code, what it wrote to stderr)`."""
    mod = load_tool("train")
    capsys.readouterr()
    rc = mod.main([str(a) for a in argv])
    return rc, capsys.readouterr().err
