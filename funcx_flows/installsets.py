"""Light installs: which distributions each part needs, from the package's own extras.

The plain install (``pip install funcx-flows``, ``pip install -e .``) brings every
part. A host that runs one part only (an HPC login node that runs an endpoint, a
laptop that only submits) installs the package without its dependencies and then
one set's requirements::

    pip install --no-deps funcx-flows
    pip install $(python -m funcx_flows.installsets endpoint)

Sets: ``sdk`` (Client, Executor, ``funcx-flows task``), ``endpoint``
(``funcx-endpoint`` and its agent, managers and workers), ``flows`` (the SDK with
the Prefect integration: ``remote_task``, ``EndpointTaskRunner``, ``transfer``).
The service and the triggers take the plain install.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import requires

SETS = ("sdk", "endpoint", "flows")
_EXTRA = re.compile(r"""extra\s*==\s*["']([\w-]+)["']""")


def requirements(name: str) -> list[str]:
    """The requirement strings of install set ``name`` (the extra of that name)."""
    if name not in SETS:
        raise ValueError(f"no install set {name!r}: one of {', '.join(SETS)}")
    out = []
    for req in requires("funcx-flows") or []:
        spec, _, marker = req.partition(";")
        found = _EXTRA.search(marker)
        if found and found[1] == name:
            out.append(spec.strip())
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in SETS:
        print(f"usage: python -m funcx_flows.installsets {{{','.join(SETS)}}}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(requirements(args[0])))  # one a line: for $(...) or -r /dev/stdin


if __name__ == "__main__":
    main()
