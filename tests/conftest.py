"""Test-wide setup.

Triton kernels must see TRITON_INTERPRET=1 before they are decorated, so it is set here, before any
test module imports `kernels`, whenever no CUDA device is present.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# Shared fixtures: a tokenizer trained on a slice of the standard library and a tiny random model.
# Session-scoped: built once (about a second), used by the core, train and lsp tests alike.
from support import stdlib_texts  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from infill.tokenizer import CodeTokenizer

    return CodeTokenizer.train(stdlib_texts(), 1024)


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    from infill.config import ModelConfig
    from infill.model import Transformer

    torch.manual_seed(0)
    return Transformer(ModelConfig.from_preset("test-tiny", vocab_size=len(tiny_tokenizer))).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model, tiny_tokenizer):
    """A checkpoint directory of the tiny random model (read-only for tests: copy before changing)."""
    from infill.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_model, tiny_tokenizer)
