"""pytest setup for ferry's Python tests: finds the built package (ctest sets PYTHONPATH to
BUILD/python; run by hand, FERRY_BUILD_DIR or build/ is used) and gives the shared helpers."""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
try:
    import ferry  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(root, os.environ.get("FERRY_BUILD_DIR", "build"), "python"))
    import ferry  # noqa: F401

SHARED_DATA = os.path.join(os.path.dirname(root), "shared", "data")
