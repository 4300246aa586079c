"""Estimate an LLM request's latency, energy and CO2 before running it.

R-ICE (Sikand et al., GREENS 2025) reproduced and improved, and refitted from
our own measurements:

- formulas   the paper's pure formulas (Eq. 1, energy, CO2), coefficients as keywords
- hardware   GPU profiles: spec-sheet and energy-accounting constants
- datasets   the bundled HELM (training) and LLM-Perf (validation) data; the only file reads
- rice       the paper's three regressors and its Table III comparison
- physical   the improved estimator: physically shaped features, JSON fit
- local      refits for CPU inference from measured results, JSON fit
- validation MAPE against LLM-Perf; reproduce runs the whole experiment
- estimate   one request's estimate from a fit; store / tasks: Postgres and Celery
- plan       an experiment's per-variant figures and totals before it runs (`greenctl plan`)
- grading    estimates recorded before each inference vs their measurements (MAPE, coverage)
"""
