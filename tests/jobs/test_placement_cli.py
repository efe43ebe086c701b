"""A verb whose actors ask for what no node of the cluster has stops at start: exit 2, one line naming the key.

Ray would leave the actors PENDING forever; the command instead checks each placement group against the nodes
before reserving it. The prompts come from a dataset repository on disk (``hf:…``), read like a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

CARD = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: prompts.jsonl\n---\n"


def test_generate_on_a_cluster_without_gpus_exits_2_naming_the_resource_key(tmp_path: Path) -> None:
    repo = tmp_path / "prompts"
    repo.mkdir()
    (repo / "README.md").write_text(CARD)
    (repo / "prompts.jsonl").write_text("".join(json.dumps({"text": f"Tell me about pet {i}."}) + "\n"
                                                for i in range(4)))
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "generate", "--config", "configs/tiny.yaml",
         "--prompts", f"hf:{repo}?split=train&columns=text:prompt", "--out", str(tmp_path / "out.jsonl"),
         "--cluster.generation.num_gpus", "1", "--cluster.include_dashboard", "false"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"},
    )
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cluster.generation: a bundle of {CPU: 1, GPU: 1} fits on no node "
                           "(the closest offers {CPU: 8, GPU: 0})"), last
    assert "Traceback" not in result.stderr and not (tmp_path / "out.jsonl").exists()
