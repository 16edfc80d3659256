import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
# a Hugging Face cache of this session's own, set before huggingface_hub is imported: the hub
# mirrors (ldm_core.hub_mirror) are written there and nothing of the user's cache is read
_HF_CACHE = tempfile.mkdtemp(prefix="ldm-test-hf-cache-")
os.environ["HF_HUB_CACHE"] = _HF_CACHE
atexit.register(shutil.rmtree, _HF_CACHE, ignore_errors=True)
# cheap previews' latent -> RGB maps fitted for the tiny test models: a folder of this session's
_RGB_CACHE = tempfile.mkdtemp(prefix="ldm-test-latent-rgb-")
os.environ["LDM_LATENT_RGB_DIR"] = _RGB_CACHE
atexit.register(shutil.rmtree, _RGB_CACHE, ignore_errors=True)

# The slow stage (`python -m pytest -q -m slow`; .ci/run runs it before the README's fast command):
# every chromium test, the soaks and the zoo through the studio in subprocesses, the benchmarks' real
# cases, the server on a Ray cluster. Together the rest stays under 10 minutes on 2 cores.
SLOW_FILES = {"test_zoo_studio.py", "test_load.py", "test_ray_server.py", "test_mcp.py"}
SLOW_TESTS = {"test_cpu_real_bench_runs_the_studio_diffusers_and_openvino_on_a_tiny_mirror",
              "test_hub_bench_runs_a_mirrored_hub_model_in_a_fresh_process",
              "test_browser_upload_run_and_see_the_table", "test_hub_model_runs_at_native_and_awkward_sizes",
              "test_coordinate_channels_and_photo_mix", "test_inpaint_and_superres_stages_train_export_and_run"}


@pytest.hookimpl(tryfirst=True)     # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("soak"):
            continue
        if item.path.name.startswith("test_browser") or item.path.name in SLOW_FILES \
                or item.name.split("[")[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory) -> Path:
    """Tiny random-weight models of every pipeline class and layout, and their catalog."""
    from ldm_core.testing import write_tiny_catalog
    return write_tiny_catalog(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def stack(tiny_catalog, tmp_path_factory):
    from ldm_core.stack import ModelStack
    return ModelStack.from_catalog(tiny_catalog, device="cpu", output_dir=tmp_path_factory.mktemp("outputs"))


@pytest.fixture(scope="session")
def service(stack):
    from ldm_core.service import Service
    return Service(stack)


@pytest.fixture(scope="session")
def hub_mirrors(tmp_path_factory):
    """Every hub repository of the catalog, mirrored (tiny widths, real layout) into this session's
    Hugging Face cache. Returns the marker file that any unpickled booby-trapped pickle creates."""
    from ldm_core.hub_mirror import write_all
    marker = tmp_path_factory.mktemp("pickle-trap") / "a-pickle-was-opened"
    write_all(_HF_CACHE, marker)
    return marker
