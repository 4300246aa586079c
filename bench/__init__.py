"""Benchmarks: what greenctl costs and what it saves, measured side by side in one run.

    python -m bench <name>|all [--json] [--quick]

Each benchmark is one module with `run(size) -> Report`; `size` is "full",
"quick" or "smoke" (the last only proves the code path, for `make test`).
Figures are ratios of things measured in the same run, interleaved, because
this machine is shared and its load drifts. Results and commands: RESULTS.md.
"""
