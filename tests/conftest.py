import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory) -> Path:
    """Tiny random-weight models of every pipeline class and layout, and their catalog."""
    from ldm_core.testing import write_tiny_catalog
    return write_tiny_catalog(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def stack(tiny_catalog, tmp_path_factory):
    from ldm_core.stack import ModelStack
    return ModelStack.from_catalog(tiny_catalog, device="cpu", output_dir=tmp_path_factory.mktemp("outputs"))
