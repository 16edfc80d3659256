"""Python imports this at start-up in the test servers that put this folder on PYTHONPATH
(tests/test_faults.py): with LDM_TEST_OOM=<text> set, out of memory is injected (inject.py)."""
import os

if os.environ.get("LDM_TEST_OOM"):
    from inject import install
    install(os.environ["LDM_TEST_OOM"])
