"""Providers forget old ended blocks (an endpoint that releases and submits blocks
for months would otherwise keep all it ever had), but only once a poll's answer
showed them ended, never an active one, and never a process still ending."""

from __future__ import annotations

import types
from pathlib import Path

from waiting import wait_until

from funcx_flows.endpoint.config import EndpointConfig
from funcx_flows.endpoint.providers import base
from funcx_flows.endpoint.providers.base import (
    CANCELLED,
    ENDED,
    FAILED,
    KEEP_ENDED,
    RUNNING,
    Block,
    EndedBlocks,
)
from funcx_flows.endpoint.providers.inline import InlineProvider
from funcx_flows.endpoint.providers.local import LocalProvider
from funcx_flows.endpoint.providers.slurm import SlurmProvider


def test_only_ended_blocks_are_forgotten_and_the_newest_kept():
    blocks = {f"b{i}": Block(f"b{i}", state=ENDED if i % 2 else FAILED) for i in range(40)}
    blocks["live"] = Block("live", state=RUNNING)
    ended = EndedBlocks()
    # (called once the poll's answer was taken: every one of them was in it, ended)
    assert ended.prune(blocks) == [f"b{i}" for i in range(40 - KEEP_ENDED)]
    assert list(blocks) == [f"b{i}" for i in range(40 - KEEP_ENDED, 40)] + ["live"]
    assert ended.prune(blocks) == []
    blocks["live"].state = CANCELLED
    blocks["late"] = Block("late", state=CANCELLED)
    assert ended.prune(blocks, gone=lambda b: b != "late") == [f"b{40 - KEEP_ENDED}"]
    assert ended.prune(blocks, gone=lambda b: b != "late") == []
    assert "late" in blocks  # its process is still ending


def test_the_local_provider_forgets_old_ended_blocks_and_their_logs(tmp_path: Path):
    provider = LocalProvider(tmp_path)
    ids = [f"blk{i:02d}" for i in range(KEEP_ENDED + 6)]
    for block_id in ids:
        provider.submit(block_id, "true")
    wait_until(lambda: not any(b.active for b in provider.poll()), 30, "the blocks to end",
               interval=0.05)
    provider.poll()
    kept = [b.block_id for b in provider.poll()]
    # (which ones: those seen ended last, which on a busy machine need not be the
    # last submitted)
    assert len(kept) == KEEP_ENDED and set(kept) <= set(ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"block-{b}.log" for b in kept)
    provider.close()


def test_the_inline_provider_forgets_old_ended_blocks():
    provider = InlineProvider()
    ids = [f"blk{i:02d}" for i in range(KEEP_ENDED + 3)]
    for block_id in ids:
        provider.submit(block_id, "")
        provider.ended(block_id)
    provider.submit("live", "")
    assert len(provider.poll()) == len(ids) + 1  # shown ended once first
    assert [b.block_id for b in provider.poll()] == [*ids[-KEEP_ENDED:], "live"]


def test_the_psij_provider_forgets_a_block_with_its_files(tmp_path: Path, monkeypatch):
    """A forgotten batch block takes its output and what PSI/J keeps for its job
    (script, launcher log, exit code, submit output) along; other jobs' stay."""
    monkeypatch.setattr(base, "KEEP_ENDED", 0)
    provider = SlurmProvider(EndpointConfig(provider="slurm"), tmp_path / "blocks")
    work = Path(provider.executor.work_directory)
    work.mkdir(parents=True, exist_ok=True)
    job = types.SimpleNamespace(id="0b6c", native_id="12")
    ours = [work / "0b6c.job", work / "0b6c_launcher.log", work / "12.ec", work / "12.out",
            provider.log_dir / "block-b1.out", provider.log_dir / "block-b1.err"]
    others = [work / "123.ec", work / "9f00.job", provider.log_dir / "block-b2.out"]
    for path in ours + others:
        path.touch()
    provider._blocks["b1"] = Block("b1", state=ENDED)
    provider._jobs["b1"] = job
    assert [b.block_id for b in provider.poll()] == ["b1"]  # shown ended once
    assert provider.poll() == []
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in others)
