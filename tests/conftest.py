"""Suite-wide test settings.

Tests use tiny tensors, for which intra-op threading costs more than it gains (and on a shared
2-core machine threads thrash), so every test runs torch single-threaded. OMP_NUM_THREADS=1 keeps
it so through the commands the tests run, whose automatic --threads choice follows that variable.
"""
import logging
import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    previous, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(previous)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture(autouse=True)
def _restore_patchrefinenet_logger():
    """Commands attach a console handler bound to the test's captured stderr; once that capture is
    closed, a later test's log line would fail ('--- Logging error ---'). Each test starts clean."""
    logger = logging.getLogger("patchrefinenet")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    for handler in [h for h in logger.handlers if h not in handlers]:
        logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
def log_messages():
    """``log_messages(func) -> (func(), [messages the patchrefinenet logger emitted at INFO or above])``."""
    def capture(func):
        logger = logging.getLogger("patchrefinenet")
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append
        logger.addHandler(handler)
        level = logger.level
        logger.setLevel(logging.INFO)
        try:
            return func(), [r.getMessage() for r in records]
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)

    return capture
