"""Suite-wide test settings.

Tests use tiny tensors, for which intra-op threading costs more than it gains (and on a shared
2-core machine threads thrash), so every test runs torch single-threaded.
"""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
