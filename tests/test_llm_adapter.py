"""The question reader's LoRA adapter (tools/reader_adapter) with the real base GGUF, no mocks.

Pins that the shipped adapter is the pinned file, that llama.cpp with it loaded computes what
training computed, that the tuned reader reads exactly the token sequence it was trained on,
and that its training data holds no benchmark question.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from llm_testdb import build_audit_db

from glassbox_audit.config import LlmConfig
from glassbox_audit.errors import ModelError
from glassbox_audit.llm import Catalog, load_configured_model
from glassbox_audit.llm.reader import Example, tuned_pieces
from glassbox_audit.llm.runtime import ADAPTERS_DIR, KNOWN_MODELS, LocalLLM, ModelSpec
from glassbox_audit.llm.scorer import Scorer
from glassbox_audit.llm.vocabulary import Vocabulary

ROOT = Path(__file__).resolve().parents[1]
KNOWN = KNOWN_MODELS["smollm2-135m-instruct"]


@pytest.fixture(scope="module")
def llm():
    return load_configured_model(LlmConfig(threads=2))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return Catalog.load(build_audit_db(tmp_path_factory.mktemp("adapter") / "audit.sqlite"))


def test_the_default_model_reads_with_the_pinned_adapter(llm):
    name, digest = KNOWN.adapter
    assert llm.spec.adapter == ADAPTERS_DIR / name
    assert hashlib.sha256(llm.spec.adapter.read_bytes()).hexdigest() == digest == llm.scorer.adapter_sha256
    assert llm.spec.label.endswith(f"+ reader LoRA (sha256 {digest})")  # logged with every answer


def test_an_adapter_whose_hash_differs_from_the_pin_is_refused(llm, tmp_path):
    copy = tmp_path / "reader.gguf"
    shutil.copyfile(llm.spec.adapter, copy)
    with copy.open("r+b") as f:  # one byte of a tensor changed
        f.seek(-100, 2)
        b = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([b[0] ^ 1]))
    spec = ModelSpec(llm.spec.path, llm.spec.sha256, "x", copy, llm.spec.adapter_sha256)
    with pytest.raises(ModelError, match="differs from the pinned"):
        LocalLLM(spec, n_ctx=256, threads=1)


def test_llama_cpp_with_the_adapter_computes_what_training_computed(llm):
    # The probe holds torch's log-probabilities (dequantised base + LoRA) of each answer token
    # of training examples. llama.cpp with the adapter must give the same numbers (Q4_1 dot
    # products on 8-bit activations: small differences), the base model alone very different
    # ones: the adapter is applied, with the query/key row permutation right.
    probe = json.loads(llm.spec.adapter.with_suffix(".probe.json").read_text())
    base = Scorer(llm.spec.path, llm.sha256, n_ctx=512, n_seq_max=2, n_batch=256, threads=2)
    tuned = Scorer(llm.spec.path, llm.sha256, n_ctx=512, n_seq_max=2, n_batch=256, threads=2,
                   adapter=llm.spec.adapter, adapter_sha256=llm.spec.adapter_sha256)
    try:
        for ex in probe:
            ids, target = ex["ids"], ex["target"]
            got, untuned = [], []
            for scorer, out in ((tuned, got), (base, untuned)):
                for i in range(1, len(ids)):
                    if target[i]:
                        scorer.reset(ids[:i])
                        out.append(float(scorer.logprobs[ids[i]]))
            want = np.array(ex["logprobs"])
            assert np.abs(np.array(got) - want).max() < 0.3
            assert abs(sum(got) - want.sum()) < 0.05 * len(want) + 0.2
            assert sum(untuned) < want.sum() - 20
    finally:
        base.close()
        tuned.close()


@pytest.mark.parametrize("question", [
    "What is the Dice of each model?",
    "Which batch has the lowest DSC for model 3?",
    "precision and recall of model 1 and the balanced one on batch 2",
    "IoU of model 3 for image IMG_0005",
    "Recall of model 7",
    "tell me a joke",
])
def test_the_tuned_reader_reads_the_token_sequence_it_was_trained_on(llm, catalog, question):
    reading = llm.read(question, catalog)
    phrases: dict[str, list[str]] = {}
    for d in reading.decisions:
        phrases.setdefault(d.field, []).append(d.phrase)
    if not reading.about:
        ex = Example(question, about="no")
    else:
        ex = Example(question, models=tuple(phrases["model"]), metrics=tuple(phrases["metric"]),
                     part=phrases["part"][0], averaging=phrases["averaging"][0])
    s = llm.scorer
    pieces = tuned_pieces(catalog, ex)
    want = []
    # The last choice and its terminator are scored, not appended: the reader stops there.
    for k, (text, _) in enumerate(pieces[:-2]):
        want += s.tokenize(text, bos=k == 0)
    assert reading.tokens == want
    assert pieces[-1] == ("\n", True) and len(reading.tokens) > 10


def test_the_training_data_holds_no_benchmark_question():
    sys.path.insert(0, str(ROOT / "tools" / "reader_adapter"))
    import make_data

    held_out = make_data.benchmark_questions()
    assert len(held_out) >= 400
    rng = random.Random(7)
    seen = 0
    for _ in range(60):
        v = Vocabulary.from_catalog(make_data.random_catalog(rng))
        for _ in range(10):
            ex = make_data.question(rng, v)
            seen += 1
            for text, _ in ex.pieces():
                assert text  # every piece is real text (an empty one would tokenise to nothing)
    assert seen == 600
    data = ROOT / "build" / "reader-adapter" / "data.jsonl"
    card = (ADAPTERS_DIR / "CARD.md").read_text()
    # The card names the data by hash; when the data is here (it is rebuilt by make reader-adapter,
    # not committed), no training question is a benchmark question.
    if data.is_file() and hashlib.sha256(data.read_bytes()).hexdigest() in card:
        from glassbox_audit.llm.vocabulary import normalise

        questions = {normalise(json.loads(line)["q"]) for line in data.open()}
        assert not questions & held_out


def test_a_file_that_is_no_adapter_is_refused_naming_it(llm, tmp_path):
    bad = tmp_path / "not-an-adapter.gguf"
    bad.write_bytes(b"GGUF" + bytes(500))
    with pytest.raises(ModelError, match="not-an-adapter.gguf: llama.cpp cannot load this LoRA adapter"):
        Scorer(llm.spec.path, llm.sha256, n_ctx=256, threads=1, adapter=bad, adapter_sha256="0" * 64)


def test_the_adapter_follows_the_packaged_file_and_not_another_pinned_one(caplog):
    """Pinning the packaged file's own hash keeps the adapter; pinning another file's drops it,
    with a warning: the adapter was trained over the packaged weights only."""
    from glassbox_audit.llm.runtime import DEFAULT_MODEL, KNOWN_MODELS, known_spec

    known = KNOWN_MODELS[DEFAULT_MODEL]
    assert known_spec(known, "models", known.sha256.upper()).adapter is not None
    with caplog.at_level("WARNING", logger="glassbox_audit.llm.runtime"):
        other = known_spec(known, "models", "ab" * 32)
    assert other.adapter is None and "not applied" in caplog.text
