"""The estimate a worker expects before each inference, recorded next to its measurement.

Fits come from Postgres (the newest good fit of this worker's hardware profile,
looked up again every FIT_TTL_S, or NO_FIT_TTL_S while there is none); the
formula is shared.predict's. Tokens are not known before the prompt is
tokenized: they are characters / 4, and the part a prefix cache holds is what
this prompt shares with the variant's previous one on this worker. No fit yet:
no estimate (None columns), never a guess.
"""
from __future__ import annotations

import logging
import time

from shared import predict
from shared.accounting import at_the_wall

log = logging.getLogger("greenctl.worker")

FIT_TTL_S = 300.0
NO_FIT_TTL_S = 10.0      # no fit yet: look again soon (a refit lands when an experiment ends)
_fits: dict[tuple[str, str], tuple[float, dict]] = {}
_infos: dict[tuple[str, int], dict] = {}
_last_prompt: dict[int, str] = {}

NONE = {"estimate_fit_id": None, "estimate_energy_fit_id": None, "estimate_e2e_s": None,
        "estimate_energy_kwh": None}


def _fits_of(db: str, profile: str) -> dict:
    from worker import store

    key = (db, profile)
    cached = _fits.get(key)
    if cached is None or time.monotonic() - cached[0] > (FIT_TTL_S if cached[1] else NO_FIT_TTL_S):
        cached = (time.monotonic(), store.good_fits(db, profile))
        _fits[key] = cached
    return cached[1]


def _info_of(db: str, variant_id: int) -> dict:
    from worker import store

    key = (db, variant_id)
    if not _infos.get(key):
        _infos[key] = store.variant_model_info(db, variant_id)
    return _infos[key]


def tokens(variant_id: int, prompt: str) -> tuple[int, int]:
    """(prompt tokens, uncached prompt tokens) expected for `prompt`, approximated."""
    previous = _last_prompt.get(variant_id, "")
    _last_prompt[variant_id] = prompt
    shared = predict.common_prefix_chars(previous, prompt)
    total = predict.approx_tokens(prompt)
    return total, max(1, total - (predict.approx_tokens(prompt[:shared]) if shared else 0))


def output_tokens(max_tokens: int, choices: tuple[str, ...] | None) -> int:
    """Tokens expected out: a constrained label's tokens plus end of text, else the cap."""
    if not choices:
        return max_tokens
    return min(max_tokens, max(predict.approx_tokens(c) for c in choices) + 1)


def expected(db: str, profile: str, variant_id: int, request, threads: int | None, pue: float) -> dict:
    """Result columns estimate_*: fit ids, expected e2e seconds and kWh at the wall (x pue),
    for an InferenceRequest (its messages, max_tokens and label choices)."""
    from shared.prompts import render_plain

    try:
        fits = _fits_of(db, profile)
        info = _info_of(db, variant_id)
        total, uncached = tokens(variant_id, render_plain(request.messages))
        max_tokens = output_tokens(request.max_tokens, request.choices)
        if "latency_s" not in fits or not info.get("parameter_count") or not info.get("bits_per_weight"):
            return dict(NONE)
        lat_id, lat_fit = fits["latency_s"]
        inputs = dict(params=float(info["parameter_count"]), bits=float(info["bits_per_weight"]),
                      prompt_tokens=total, prompt_tokens_uncached=uncached, output_tokens=max_tokens,
                      threads=threads or int(lat_fit["inputs_seen"]["threads"][1]))
        out = dict(NONE, estimate_fit_id=lat_id,
                   estimate_e2e_s=float(predict.evaluate(lat_fit, **inputs)["value"][0]))
        if "energy_kwh" in fits:
            energy_id, energy_fit = fits["energy_kwh"]
            out.update(estimate_energy_fit_id=energy_id, estimate_energy_kwh=float(
                at_the_wall(predict.evaluate(energy_fit, **inputs)["value"][0], pue)))
        return out
    except Exception:   # an estimate must never cost a measurement
        log.exception("no estimate recorded for variant %s", variant_id)
        return dict(NONE)
