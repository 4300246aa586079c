"""python -m bench <name>|all [--json] [--quick]

Names: p1/pipeline, p2/energy, p3/prefix, p4/tracking, p5/scheduler, p6/writes,
scaling, p7/report; fleet (SIMULATED: 50 workers, timing-replay engine; by name only, not in
`all`). With --json, stdout is one JSON line per benchmark (text goes to stderr).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, aliases); `all` runs them in this order.
BENCHMARKS = {
    "p1": ("bench.pipeline", ("pipeline",)),
    "p2": ("bench.energy_protocol", ("energy",)),
    "p3": ("bench.prefix_reuse", ("prefix",)),
    "p4": ("bench.tracking_overhead", ("tracking",)),
    "p5": ("bench.scheduler_scale", ("scheduler",)),
    "p6": ("bench.result_writes", ("writes",)),
    "scaling": ("bench.scaling", ()),
    "p7": ("bench.report_build", ("report",)),
}
# Run by name only: 50 worker processes for minutes, SIMULATED inference (bench.fleet).
EXTRA = {"fleet": ("bench.fleet", ())}


def resolve(name: str) -> list[str]:
    if name == "all":
        return list(BENCHMARKS)
    for key, (_, aliases) in (BENCHMARKS | EXTRA).items():
        if name.lower() in (key, *aliases):
            return [key]
    names = ", ".join(f"{k} ({'/'.join(a)})" if a else k for k, (_, a) in (BENCHMARKS | EXTRA).items())
    raise SystemExit(f"unknown benchmark {name!r}: use one of {names}, or all")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("name", help="benchmark name or 'all'")
    parser.add_argument("--json", action="store_true", help="one JSON line per benchmark on stdout")
    parser.add_argument("--quick", action="store_true", help="fewer samples: minutes, not tens of minutes")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tests: code path only
    parser.add_argument("--workers", type=int, help="fleet only: worker processes (default 50)")
    parser.add_argument("--tasks", type=int, help="fleet only: tasks per arm")
    args = parser.parse_args(argv)
    fleet_options = {k: v for k, v in (("workers", args.workers), ("tasks", args.tasks)) if v is not None}
    if fleet_options and resolve(args.name) != ["fleet"]:
        parser.error("--workers and --tasks apply to `fleet` only")
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    text_out = sys.stderr if args.json else sys.stdout
    for key in resolve(args.name):
        report = importlib.import_module((BENCHMARKS | EXTRA)[key][0]).run(size, **fleet_options)
        print(report.as_text(), file=text_out, flush=True)
        if args.json:
            print(report.as_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
