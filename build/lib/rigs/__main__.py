"""``python -m rigs …``: the ``posrig`` command without installing it (``python -m rigs reset
--bench FILE``, ``python -m rigs doctor --bench FILE``, …); see :mod:`rigs.cli`."""

from __future__ import annotations

from rigs.cli import main

if __name__ == "__main__":
    main()
