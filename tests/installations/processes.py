"""Drive race-test workers: start several OS processes, release them at once, collect their answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Workers:
    """Processes of ``tests.installations.race_worker`` sharing one SQLite file."""

    def __init__(self, database: Path, *, api_url: str = "http://127.0.0.1:9/api/") -> None:
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SILO_RACE_DB": str(database),
            "SILO_RACE_API_URL": api_url,
        }

    def _spawn(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.installations.race_worker"],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @staticmethod
    def _wait_ready(process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"worker did not start: {line!r} {process.communicate(timeout=30)[1]}")

    def race(self, commands: list[dict[str, Any]], *, timeout: float = 60.0) -> list[Any]:
        """Start one process per command, wait until all are ready, then send every command at once."""
        processes = [self._spawn() for _ in commands]
        for process in processes:
            self._wait_ready(process)
        for process, command in zip(processes, commands, strict=True):
            assert process.stdin is not None
            process.stdin.write(json.dumps(command) + "\n")
            process.stdin.flush()
        results = []
        for process in processes:
            out, err = process.communicate(timeout=timeout)
            if process.returncode != 0:
                raise RuntimeError(f"worker failed ({process.returncode}): {err}")
            results.append(json.loads(out.strip().splitlines()[-1])["result"])
        return results

    def run(self, command: dict[str, Any]) -> Any:
        return self.race([command])[0]
