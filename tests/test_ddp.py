"""Data-parallel PRN training under ``torchrun`` on CPU (gloo): two ranks end with identical weights,
equal to the checkpoint rank 0 wrote, and only rank 0 writes files."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch.distributed as dist

from patchrefinenet.checkpoint import load_checkpoint

if not dist.is_available():
    pytest.skip("torch.distributed is not available in this torch build", allow_module_level=True)
if not dist.is_gloo_available():
    pytest.skip("the gloo backend (CPU data parallelism) is not available in this torch build", allow_module_level=True)

# Each rank trains, then dumps a hash of its final in-memory weights.
_RANK_SCRIPT = textwrap.dedent('''
    import hashlib, os, sys
    import torch
    from patchrefinenet.refine.train import RefineTrainConfig, train_prn

    torch.set_num_threads(1)
    data_dir, out = sys.argv[1], sys.argv[2]
    res = train_prn(RefineTrainConfig(data_dir=data_dir, output_root=out, aux_model="p16", width=4, epochs=2,
                                      device="cpu", progress=False))
    h = hashlib.sha256()
    for k, v in res["model"].state_dict().items():
        h.update(k.encode()); h.update(v.detach().contiguous().numpy().tobytes())
    with open(os.path.join(out, f"hash_rank{os.environ['RANK']}.txt"), "w") as f:
        f.write(h.hexdigest())
''')


def _hash(state_dict) -> str:
    h = hashlib.sha256()
    for k, v in state_dict.items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_two_cpu_ranks_end_identical_and_only_rank0_writes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    gt = (rng.random((6, 32, 32, 1)) < 0.3).astype(np.float32)
    np.save(data / "val_pred.npy", np.clip(0.4 * gt + 0.6 * rng.random(gt.shape), 0, 1).astype(np.float32))
    np.save(data / "val_orig_gt.npy", gt)
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(data), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    hashes = [(out / f"hash_rank{r}.txt").read_text() for r in (0, 1)]
    assert hashes[0] == hashes[1], "the ranks ended with different weights"
    last = load_checkpoint(out / "checkpoints" / "p16" / "p16_last.th")
    assert _hash(last.state_dict) == hashes[0]
    assert last.meta["world_size"] == 2
    # one log, each epoch reported once, one history line per epoch: rank 1 wrote nothing
    logs = list((out / "logs" / "p16").glob("p16_train_log_*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert text.count("epoch 1/2:") == 1 and text.count("epoch 2/2:") == 1 and "world size 2" in text
    assert len((out / "logs" / "p16" / "p16_train_history.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (out / "checkpoints" / "p16").iterdir()) == ["p16_last.th", "p16_weights.th"]
