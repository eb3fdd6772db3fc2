"""A DDP run's process group is ended by the ``mmfuse`` command itself once the command has finished: gloo's
groups left to the interpreter's shutdown abort the process now and then (status -6 after a run that
succeeded, "terminate called without an active exception"; 1 of 3 two-process fits here)."""

from __future__ import annotations

import torch.distributed as dist

from mmfuse.cli import main


def test_the_command_destroys_the_process_group_it_ran_in(tmp_path, capsys):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert main(["components"]) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert "Geneformer" in capsys.readouterr().out
