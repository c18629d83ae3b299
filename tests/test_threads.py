"""CPU thread defaults: physical cores, fewer while other processes keep cores busy, --threads wins."""
from __future__ import annotations

import argparse
import logging

import pytest
import torch

from data_utils.errors import InputError
from patchrefinenet.cli.common import add_threads_argument
from patchrefinenet.training import choose_threads, configure_threads, physical_cores


@pytest.mark.parametrize(
    "requested,cores,load,own,expected",
    [
        (3, 2, 5.0, 0.0, 3),  # an explicit request is used as given
        (0, 2, 0.3, 0.0, 2),  # quiet machine: every core
        (None, 2, None, 0.0, 2),  # load unknown: every core
        (0, 2, 1.0, 0.0, 1),  # one competing busy process on 2 cores
        (0, 2, 4.6, 0.0, 1),  # load 3-5 (the measured case): never below 1
        (0, 8, 2.4, 0.0, 6),  # 2.4 busy others: 2 cores taken
        (0, 8, 2.8, 0.0, 5),  # 2.8: 3 cores taken (from 0.75 of a process on, a core counts)
        (0, 8, 0.5, 0.0, 8),  # half a busy process (often the decaying load of a finished job): no core taken
        (0, 2, 0.8, 0.0, 1),  # 0.8 of a busy process takes a core
        (0, 2, 2.0, 2.0, 2),  # the load is this process' own earlier work (the demo's previous step)
        (0, 4, 3.0, 1.0, 2),  # two busy others besides this process' share
        (0, 4, 1.0, 3.0, 4),  # own share overestimated: never more than the cores
    ],
)
def test_choose_threads(requested, cores, load, own, expected):
    assert choose_threads(requested, cores, load, own) == expected


def test_ranks_of_one_job_share_the_free_cores():
    assert choose_threads(0, 16, 0.2, 0.0, processes=4) == 4
    assert choose_threads(0, 16, 4.0, 0.0, processes=4) == 3  # 12 free cores
    assert choose_threads(0, 2, 0.0, 0.0, processes=4) == 1
    assert choose_threads(5, 16, 0.0, 0.0, processes=4) == 5


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_configure_threads_sets_torch_and_logs(monkeypatch):
    previous = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    logger = logging.getLogger("patchrefinenet")  # the commands' logger does not propagate: listen on it
    records, level = _Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        assert configure_threads(2) == 2 and torch.get_num_threads() == 2
        n = configure_threads(0)
        assert 1 <= n <= physical_cores() and torch.get_num_threads() == n
        assert records.messages[0] == "CPU threads: 2 (--threads)" and "automatic" in records.messages[1]
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert configure_threads(None) == 1  # the user's environment wins over the automatic choice
        with pytest.raises(InputError, match="--threads"):
            configure_threads(-1)
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
        torch.set_num_threads(previous)


def test_threads_flag_defaults_to_automatic():
    parser = add_threads_argument(argparse.ArgumentParser())
    assert parser.parse_args([]).threads == 0 and parser.parse_args(["--threads", "3"]).threads == 3
