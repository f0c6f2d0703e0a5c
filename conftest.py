"""Fixtures the test modules of tests/ and rtl_tests/ share."""

import pytest


@pytest.fixture(scope="session")
def digits():
    """The digits data set (read-only), loaded once."""
    from hwnet.train.data import load_dataset
    return load_dataset("digits")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): their
    networks are tiny, and on a shared 2-core machine one thread trains them several times faster than two
    contending ones. The thread count is restored afterwards."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
