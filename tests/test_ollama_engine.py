"""Contract tests for the Ollama engine over recorded responses.

No Ollama server exists on this machine. These tests run the real `ollama`
Python client over real HTTP against `tests/ollama_replay.py`, a small server on
127.0.0.1 that answers with JSON files from tests/fixtures/ollama/. Those files
are responses in Ollama's documented API format (docs/api.md), written from the
documentation, not captured from a live server (see the fixtures' README). No
mocks: what is tested is what the client sends and how the engine reads the
answers.
"""
from __future__ import annotations

import socket

import pytest

from tests.ollama_replay import OllamaReplay
from worker.engines import EngineError, InferenceRequest, create_engine
from worker.engines.ollama import OllamaEngine, label_schema, ollama_tag

Q4 = "llama3.2:1b-instruct-q4_K_M"
FP16 = "llama3.2:1b-instruct-fp16"
LABELS = ("positive", "negative", "neutral")
MESSAGES = [{"role": "system", "content": "You classify the sentiment of financial text."},
            {"role": "user", "content": "Text: Profit fell 12% in the quarter.\nSentiment:"}]


def _is(model: str):
    return lambda body: body.get("model") == model


@pytest.fixture()
def server():
    """A replay server holding two pulled models, q4_K_M and fp16, that answers chats with a label."""
    with OllamaReplay() as replay:
        replay.on("/api/tags", "tags.json")
        replay.on("/api/show", "show_model_not_found.json", status=404)
        replay.on("/api/show", "show_llama3.2_1b-instruct-q4_K_M.json", when=_is(Q4))
        replay.on("/api/show", "show_llama3.2_1b-instruct-fp16.json", when=_is(FP16))
        replay.on("/api/generate", "generate_load.json")
        replay.on("/api/generate", "generate_unload.json", when=lambda body: body.get("keep_alive") == 0)
        replay.on("/api/chat", "chat_label.json")
        yield replay


@pytest.fixture()
def engine(server):
    engine = OllamaEngine(host=server.host, num_ctx=4096, num_thread=4, keep_alive="30m")
    yield engine
    engine.close()


def _closed_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- tags -------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, variant, tag", [
    ("llama3.2:1b-instruct", "q4_K_M", Q4),
    ("llama3.2:1b-instruct", "q4_k_m", Q4),          # the spec's lowercase spelling
    ("llama3.2:1b-instruct", "f16", FP16),           # Ollama's library says fp16
    ("llama3.2:1b-instruct", "q8_0", "llama3.2:1b-instruct-q8_0"),
    (Q4, "default", Q4),
    (Q4, "", Q4),
    (Q4, "q4_K_M", Q4),                             # the tag already names it
    ("llama3.2", "default", "llama3.2"),
])
def test_tag_is_model_plus_variant(model, variant, tag):
    assert ollama_tag(model, variant) == tag


@pytest.mark.parametrize("model, variant, says", [
    (Q4, "fp16", "already names quantization"),
    ("llama3.2", "q4_K_M", "has no tag"),
])
def test_tag_that_cannot_be_built_is_a_clear_error(model, variant, says):
    with pytest.raises(EngineError, match=says) as err:
        ollama_tag(model, variant)
    assert err.value.retryable is False


# -- load: /api/show -> ModelInfo ---------------------------------------------------------------

def test_load_reads_model_info_from_show(engine, server):
    info = engine.load("llama3.2:1b-instruct", "q4_K_M")

    assert info.name == Q4
    assert info.quantization == "Q4_K_M"
    assert info.parameter_count == 1235814432          # exact, from general.parameter_count
    assert info.context_length == 131072                # llama.context_length
    assert info.file_bytes == 807694464                 # /api/tags size
    assert info.bits_per_weight == pytest.approx(807694464 * 8 / 1235814432, abs=1e-3)
    assert info.sha256 == "74701a8c35f6c8d9a4b91f3f3497643001d63e0c7a84e085bed452548fa88d45"
    assert info.file.endswith("sha256-" + info.sha256)
    assert engine.model_details["parameter_size"] == "1.2B"
    assert server.requests("/api/show") == [{"model": Q4}]


def test_load_preloads_with_load_time_options_and_keep_alive(engine, server):
    engine.load("llama3.2:1b-instruct", "q4_K_M")

    [preload] = server.requests("/api/generate")
    assert preload["model"] == Q4
    assert preload["options"] == {"num_ctx": 4096, "num_thread": 4}
    assert preload["keep_alive"] == "30m"
    assert "prompt" not in preload                      # an empty prompt only loads the model
    assert engine.load_s >= 0.0


def test_load_of_the_loaded_tag_asks_the_server_nothing(engine, server):
    first = engine.load("llama3.2:1b-instruct", "q4_K_M")
    asked = len(server.requests())
    assert engine.load(Q4, "default") is first
    assert len(server.requests()) == asked


def test_switching_variant_unloads_the_previous_one(engine, server):
    engine.load("llama3.2:1b-instruct", "q4_K_M")
    info = engine.load("llama3.2:1b-instruct", "fp16")

    assert info.quantization == "F16"
    assert info.file_bytes == 2479595424
    unloads = [b for b in server.requests("/api/generate") if b.get("keep_alive") == 0]
    assert [b["model"] for b in unloads] == [Q4]
    assert "prompt" not in unloads[0]                   # no prompt + keep_alive 0 unloads


def test_host_defaults_to_the_environment(server):
    from shared.config import Settings
    from worker.runtime import WorkerOptions

    options = WorkerOptions.from_settings(Settings.from_env({"OLLAMA_HOST": server.host}))
    engine = create_engine("ollama", host=options.ollama_host)
    try:
        assert isinstance(engine, OllamaEngine)
        assert engine.load(Q4, "default").name == Q4
    finally:
        engine.close()


# -- generate: /api/chat ------------------------------------------------------------------------

def test_generate_with_choices_constrains_to_the_labels(engine, server):
    engine.load("llama3.2:1b-instruct", "q4_K_M")
    gen = engine.generate(InferenceRequest(messages=MESSAGES, max_tokens=4, temperature=0.0,
                                           top_p=0.9, top_k=50, seed=7, choices=LABELS))

    [sent] = server.requests("/api/chat")
    assert sent["model"] == Q4
    assert sent["messages"] == MESSAGES
    assert sent["stream"] is False
    assert sent["format"] == {"type": "object",
                              "properties": {"label": {"type": "string", "enum": list(LABELS)}},
                              "required": ["label"]}
    assert sent["keep_alive"] == "30m"
    # num_predict leaves room for the {"label": ...} envelope that a bare max_tokens=4 would cut.
    assert sent["options"] == {"temperature": 0.0, "top_p": 0.9, "top_k": 50, "seed": 7,
                               "num_predict": 16 + len("positive"), "num_ctx": 4096, "num_thread": 4}

    assert gen.text == "negative"
    assert gen.extra["raw"] == '{"label": "negative"}'
    assert "parse_error" not in gen.extra
    # Counts and nanosecond durations from chat_label.json.
    assert gen.prompt_tokens == gen.prompt_tokens_uncached == 61
    assert gen.output_tokens == 7
    assert gen.prompt_s == pytest.approx(0.251)
    assert gen.decode_s == pytest.approx(0.098)
    assert gen.load_s == pytest.approx(0.002154458)
    assert gen.extra["server_total_s"] == pytest.approx(0.412345678)
    assert gen.e2e_s > 0.0


def test_generate_without_choices_returns_free_text(engine, server):
    server.on("/api/chat", "chat_free_text.json")
    engine.load("llama3.2:1b-instruct", "q4_K_M")
    gen = engine.generate(InferenceRequest(messages=MESSAGES, max_tokens=64))

    [sent] = server.requests("/api/chat")
    assert "format" not in sent
    assert sent["options"]["num_predict"] == 64
    assert gen.text == "Negative [The text reports a fall in profit.]"
    assert "raw" not in gen.extra
    assert gen.extra["done_reason"] == "length"
    assert (gen.prompt_tokens, gen.output_tokens) == (187, 12)
    assert gen.prompt_s == pytest.approx(0.683809)
    assert gen.decode_s == pytest.approx(0.499921)


def test_constrained_answer_that_is_not_a_label_is_reported_not_hidden(engine, server):
    server.on("/api/chat", "chat_label_cut_off.json")
    engine.load("llama3.2:1b-instruct", "q4_K_M")
    gen = engine.generate(InferenceRequest(messages=MESSAGES, choices=LABELS))

    assert gen.text == '{"label": "neg'
    assert gen.extra["raw"] == gen.text
    assert "not one of the labels" in gen.extra["parse_error"]


def test_load_time_options_are_identical_across_calls(engine, server):
    engine.load("llama3.2:1b-instruct", "q4_K_M")
    engine.generate(InferenceRequest(messages=MESSAGES, temperature=0.0, seed=1, choices=LABELS))
    engine.generate(InferenceRequest(messages=MESSAGES, temperature=0.8, top_k=10, seed=2, max_tokens=32))

    sent = server.requests("/api/generate")[:1] + server.requests("/api/chat")
    assert len(sent) == 3
    assert {(b["options"]["num_ctx"], b["options"]["num_thread"]) for b in sent} == {(4096, 4)}
    assert {b["keep_alive"] for b in sent} == {"30m"}
    chats = server.requests("/api/chat")
    assert chats[0]["options"]["seed"] != chats[1]["options"]["seed"]   # per-request options do vary


def test_embedded_option_names_are_accepted(server):
    engine = create_engine("ollama", host=server.host, n_ctx=2048, threads=2)
    try:
        engine.load(Q4, "default")
        assert server.requests("/api/generate")[0]["options"] == {"num_ctx": 2048, "num_thread": 2}
    finally:
        engine.close()


def test_generate_before_load_is_an_error(engine):
    with pytest.raises(EngineError, match="load"):
        engine.generate(InferenceRequest(messages=MESSAGES))


def test_close_unloads_the_model(server):
    engine = OllamaEngine(host=server.host)
    engine.load(Q4, "default")
    engine.close()
    last = server.requests("/api/generate")[-1]
    assert (last["model"], last["keep_alive"], "prompt" in last) == (Q4, 0, False)


def test_label_schema_is_plain_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = label_schema(LABELS)
    jsonschema.validate({"label": "neutral"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"label": "bullish"}, schema)


# -- errors -------------------------------------------------------------------------------------

def test_missing_model_on_load_says_ollama_pull(engine, server):
    with pytest.raises(EngineError) as err:
        engine.load("llama3.2:1b-instruct", "q8_0")
    assert str(err.value) == ("model llama3.2:1b-instruct-q8_0 is not pulled on this worker: "
                              "run `ollama pull llama3.2:1b-instruct-q8_0`")
    assert err.value.retryable is False
    assert server.requests("/api/chat") == []


def test_model_removed_after_load_says_ollama_pull(engine, server):
    engine.load("llama3.2:1b-instruct", "q4_K_M")
    server.on("/api/chat", "chat_model_not_found.json", status=404)
    with pytest.raises(EngineError, match=r"run `ollama pull llama3\.2:1b-instruct-q4_K_M`") as err:
        engine.generate(InferenceRequest(messages=MESSAGES, choices=LABELS))
    assert err.value.retryable is False


def test_server_down_is_retryable():
    host = f"http://127.0.0.1:{_closed_port()}"
    engine = OllamaEngine(host=host)
    with pytest.raises(EngineError) as err:
        engine.load(Q4, "default")
    assert err.value.retryable is True
    assert f"Ollama at {host} is unreachable" in str(err.value)
    engine.close()     # closing with the server down is not an error


def test_server_gone_after_load_is_retryable(server):
    engine = OllamaEngine(host=server.host)
    engine.load(Q4, "default")
    server.stop()                            # its port now refuses connections
    with pytest.raises(EngineError, match="unreachable") as err:
        engine.generate(InferenceRequest(messages=MESSAGES))
    assert err.value.retryable is True
    engine.close()


def test_prompt_longer_than_the_context_is_not_retryable(engine, server):
    engine.load("llama3.2:1b-instruct", "q4_K_M")
    server.on("/api/chat", "chat_context_exceeded.json", status=400)
    with pytest.raises(EngineError, match=r"does not fit the context window \(num_ctx=4096\)") as err:
        engine.generate(InferenceRequest(messages=MESSAGES))
    assert err.value.retryable is False


def test_busy_server_is_retryable(engine, server):
    engine.load("llama3.2:1b-instruct", "q4_K_M")
    server.on("/api/chat", "chat_server_busy.json", status=503)
    with pytest.raises(EngineError, match="HTTP 503") as err:
        engine.generate(InferenceRequest(messages=MESSAGES))
    assert err.value.retryable is True


def test_available_models_lists_pulled_tags(engine, server):
    assert engine.available_models() == [FP16, Q4]
    assert server.requests("/api/tags") == [{}]


def test_a_prompt_that_filled_the_context_fails_instead_of_being_scored(server):
    engine = create_engine("ollama", host=server.host, n_ctx=2048)
    server.on("/api/chat", "chat_label_context_full.json")
    try:
        engine.load(Q4, "default")
        with pytest.raises(EngineError, match="filled the context.*2040 prompt tokens.*num_ctx 2048") as err:
            engine.generate(InferenceRequest(messages=MESSAGES, max_tokens=4, temperature=0.0,
                                             top_p=0.9, top_k=50, seed=7, choices=LABELS))
        assert not err.value.retryable
    finally:
        engine.close()
