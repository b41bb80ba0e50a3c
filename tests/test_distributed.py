"""Two training processes on one CPU (gloo backend), started by torchrun as a user would."""

import json
import subprocess
import sys

import pandas as pd


def test_two_processes(tmp_path, small_csv, tiny_bert_dir):
    out = tmp_path / "ddp"
    settings = {"data": small_csv, "output_dir": str(out), "model": {"backbone": tiny_bert_dir}, "epochs": 1,
                "batch_size": 16, "lr": 1e-3, "progress": False}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "tests/ddp_worker.py", json.dumps(settings)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"ddp.rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["weights"] == ranks[1]["weights"], "the processes' weights drifted apart"
    rows = [{tuple(x) for x in r["rows"]} for r in ranks]
    assert not rows[0] & rows[1], "the two processes saw the same training rows"
    assert len(rows[0] | rows[1]) == 210  # 70% of 300 rows, each seen once
    log = pd.read_csv(out / "metrics.csv")
    assert (log[log["split"] == "validation"]["n"] == 45).all()  # the whole validation split, once
