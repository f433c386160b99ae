import os, shutil
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture
def repo_copy(tmp_path):
    "A throwaway copy of what `sslmed paper` reads, so tests never write into the checkout."
    for d in ("nbs", "data_cards", "benchmarks/results"):
        if (ROOT / d).exists(): shutil.copytree(ROOT / d, tmp_path / d)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path
