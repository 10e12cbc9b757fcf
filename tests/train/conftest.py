"""Fixtures shared by the train tests."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models on shared, busy cores: one thread is several times faster than a contended pool."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
