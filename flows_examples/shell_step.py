"""A shell step in a Prefect flow: checksums of files, computed on the endpoint by
``sha256sum`` (any executable the endpoint's machine has works the same way).

    funcx-flows service start && funcx-endpoint configure demo && funcx-endpoint start demo
    FUNCX_FLOWS_EXAMPLE_ENDPOINT=demo python flows_examples/shell_step.py FILE...

``remote_map`` runs one command per file, in parallel on the endpoint's workers;
each answer is a ``ShellResult`` (return code, the ends of stdout and stderr). A
file that cannot be read is a non-zero return code, reported, not an exception.
"""

from __future__ import annotations

import os
import shlex
import sys

from prefect import flow

from funcx_flows import ShellFunction, remote_map

ENDPOINT = os.environ.get("FUNCX_FLOWS_EXAMPLE_ENDPOINT", "demo")
checksum = ShellFunction("sha256sum {0}", walltime=600, snippet_lines=5, name="sha256sum")


@flow(name="checksums")
def checksums(paths: list[str], endpoint: str = ENDPOINT) -> dict[str, str]:
    """path -> its SHA-256, or the error the command printed."""
    results = remote_map(checksum, [shlex.quote(p) for p in paths], endpoint=endpoint)
    return {path: (r.stdout.split()[0] if r.returncode == 0 else f"error: {r.stderr.strip()}")
            for path, r in zip(paths, results, strict=True)}


if __name__ == "__main__":
    for path, digest in checksums(sys.argv[1:]).items():
        print(f"{digest}  {path}")
