"""Multi-node data parallelism simulated on one machine: two "nodes" of one worker each, each with
its own copy of the corpus at its own path and its own index cache (no shared disk assumed).

Node 0 is started as a user would (scripts/run_distribute_train.sh with MASTER_ADDR, NODE_RANK and
LOCAL_WORKERS: msrun, scheduler and worker 0). Node 1's worker is started with the environment
msrun gives a worker (MS_ROLE, MS_SCHED_HOST/PORT, MS_WORKER_NUM, MS_NODE_ID): a second msrun on
the same host would see the master address as its own and start a second scheduler.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT.parent / "shared" / "datasets" / "train" / "T91"

pytestmark = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun not on PATH")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_copy(root: Path, drop: int = 0) -> Path:
    """The first 24 T91 images (minus ``drop``), as a node's local disk would hold them."""
    root.mkdir(parents=True)
    for path in sorted(TRAIN.glob("*.bmp"))[:24 - drop]:
        shutil.copy(path, root / path.name)
    return root


def _two_nodes(tmp_path: Path, data0: Path, data1: Path):
    port = str(_free_port())
    args = ["--tasks", "[sr_x2,denoise_30]", "--batch_size", "4", "--steps", "2", "--log_every", "1",
            "--workers", "1", "--threads", "1"]
    node0 = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK="0", LOCAL_WORKERS="1",
                 LOG_DIR=str(tmp_path / "logs0"), IPT_CACHE_DIR=str(tmp_path / "cache0"))
    node1 = dict(os.environ, MS_ROLE="MS_WORKER", MS_WORKER_NUM="2", MS_SCHED_HOST="127.0.0.1",
                 MS_SCHED_PORT=port, MS_NODE_ID="1", RANK_SIZE="2", IPT_CACHE_DIR=str(tmp_path / "cache1"))
    (tmp_path / "logs1").mkdir()
    log1 = open(tmp_path / "logs1" / "worker_1.log", "w")
    procs = [
        subprocess.Popen(["bash", "scripts/run_distribute_train.sh", "2", "ipt_tiny", *args, "--train_path",
                          str(data0), "--out_dir", str(tmp_path / "out0")],
                         cwd=ROOT, env=node0, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        subprocess.Popen([sys.executable, "train.py", "--config", "ipt_tiny", "--distribute", "true", *args,
                          "--train_path", str(data1), "--out_dir", str(tmp_path / "out1")],
                         cwd=ROOT, env=node1, stdout=log1, stderr=subprocess.STDOUT, text=True),
    ]
    out0 = procs[0].communicate(timeout=400)[0]
    procs[1].wait(timeout=400)
    log1.close()
    logs = [(tmp_path / f"logs{n}" / f"worker_{n}.log") for n in range(2)]
    return [p.returncode for p in procs], out0, [log.read_text() if log.exists() else "" for log in logs]


def test_two_nodes_with_their_own_disks_train_together(tmp_path):
    codes, outs, logs = _two_nodes(tmp_path, _node_copy(tmp_path / "disk0" / "t91"),
                                   _node_copy(tmp_path / "elsewhere" / "train"))
    assert codes == [0, 0], (outs, logs[1][-2000:])
    digests = [re.search(rf"rank {r} finished at step 2, weights digest (\w+)", logs[r]) for r in range(2)]
    assert all(digests) and digests[0].group(1) == digests[1].group(1)
    for node in range(2):  # each node indexed its own copy, in its own cache
        assert len(list((tmp_path / f"cache{node}" / "index").glob("*.npz"))) == 1


def test_nodes_with_different_corpora_stop_with_one_line(tmp_path):
    codes, outs, logs = _two_nodes(tmp_path, _node_copy(tmp_path / "disk0" / "t91"),
                                   _node_copy(tmp_path / "disk1" / "t91", drop=1))
    assert codes[0] != 0 and codes[1] != 0
    assert "rank 1 sees different training data than rank 0" in logs[0] + logs[1]
