import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# tests/reference holds slow reference implementations: `from reference.ref_htsr import ...`
sys.path.insert(0, str(Path(__file__).parent))

# Threaded OpenBLAS on 2 (shared) cores makes small numpy SVDs up to ~80x slower; the tests
# use single-threaded BLAS (torch keeps its own thread setting above).
try:
    from threadpoolctl import threadpool_limits
    _BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")
except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
    _BLAS_LIMIT = None


@pytest.fixture
def rng():
    import numpy as np
    return np.random.default_rng(0)


@pytest.fixture
def one_torch_thread():
    """Tiny networks run far faster on one torch thread (no spin-waiting on busy cores);
    use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
