"""Blocks as plain child processes on this host: the embedded default."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from funcx_flows.endpoint.config import EndpointConfig
from funcx_flows.endpoint.providers import base
from funcx_flows.endpoint.providers.base import CANCELLED, ENDED, FAILED, RUNNING, Block


class LocalProvider:
    """Each block is one ``sh -c <command>`` process group; ``nodes`` is always 1."""

    @classmethod
    def for_endpoint(cls, config: EndpointConfig, log_dir: Path) -> LocalProvider:
        return cls(log_dir)

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._blocks: dict[str, Block] = {}
        self._ended = base.EndedBlocks()

    def submit(self, block_id: str, command: str) -> Block:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self._log_dir / f"block-{block_id}.log"
        with log_path.open("ab") as log:
            # The manager ends with this process (see manager._follow_parent).
            env = {**os.environ, "FUNCX_FLOWS_MANAGER_PARENT_PID": str(os.getpid())}
            proc = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, env=env,
            )
        self._procs[block_id] = proc
        block = Block(block_id=block_id, job_id=str(proc.pid), state=RUNNING)
        self._blocks[block_id] = block
        return block

    def poll(self) -> list[Block]:
        for block_id, proc in self._procs.items():
            block = self._blocks[block_id]
            if block.active and proc.poll() is not None:
                if proc.returncode == 0:
                    block.state = ENDED
                else:
                    block.state = FAILED
                    block.message = f"manager exited with {proc.returncode}; " + self._tail(
                        block_id)
        answer = list(self._blocks.values())
        for block_id in self._ended.prune(
                self._blocks, lambda b: self._procs[b].poll() is not None):
            del self._procs[block_id]
            (self._log_dir / f"block-{block_id}.log").unlink(missing_ok=True)
        return answer

    def _tail(self, block_id: str) -> str:
        try:
            return (self._log_dir / f"block-{block_id}.log").read_text()[-500:]
        except OSError:
            return ""

    def cancel(self, block_ids: list[str]) -> None:
        for block_id in block_ids:
            proc = self._procs.get(block_id)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            self._blocks[block_id].state = CANCELLED

    def close(self) -> None:
        self.cancel(list(self._procs))
        for proc in self._procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
