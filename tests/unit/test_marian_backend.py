"""The greedy Marian backend (engine/marian_greedy.py) behind the engine's contract, on a tiny real
Marian checkpoint: finals are ``generate()``'s greedy output, a sequence decodes the same alone or in
any batch, joining and leaving mid-batch; drafts are the greedy prefix; the checkpoint's pair and
generation settings are read or refused (engine/user_translator.py)."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine.diffusion.rules import truncate_at_eos
from engine.errors import EngineError, ModelResolutionError
from engine.marian_greedy import GreedyRules, MarianGreedyDenoiser
from engine.translator_pool import pooled_card
from engine.types import CanvasKey, CanvasRequest, WindowJob
from engine.user_translator import MarianModel, TranslatorSpec, describe_spec, load_user_translator
from tests.engine_driver import drive
from tests.tiny_marian import sentences

SOURCES = [
    *sentences(6, random.Random(11)),
    "Good evening everyone, thank you for coming here now.",
    "Tomorrow?",
]


@pytest.fixture(scope="module")
def marian(tiny_marian: Path) -> MarianModel:
    return load_user_translator(TranslatorSpec.parse(str(tiny_marian)))


def request_for(marian: MarianModel, index: int, source: str) -> CanvasRequest:
    return marian.request_for(WindowJob(CanvasKey("s", "en", index), source, (), "es", "en", 0))


def greedy(marian: MarianModel, request: CanvasRequest) -> tuple[int, ...]:
    """``generate()``'s greedy tokens for the request, cut at the first </s>."""
    model = marian.denoiser.model
    with torch.inference_mode():
        output = model.generate(
            input_ids=torch.tensor([request.prompt_ids]),
            num_beams=1,
            do_sample=False,
            max_new_tokens=request.max_new_tokens,
        )
    tokens, _ = truncate_at_eos(output[0, 1:].tolist(), marian.denoiser.eos_token_ids)
    return tuple(tokens)


def tokens_of(text: str) -> tuple[int, ...]:
    """The driver decodes tokens as their ids joined by spaces."""
    return tuple(int(t) for t in text.split())


def test_finals_are_generates_greedy_output_once_each_after_growing_drafts(marian: MarianModel) -> None:
    requests = [request_for(marian, i, s) for i, s in enumerate(SOURCES)]
    run = drive(marian.denoiser, {0: requests})
    assert max(run.batch_sizes) == len(SOURCES)  # one forward stepped every window
    ended_early = 0
    for request in requests:
        final = run.finals[request.key]
        expected = greedy(marian, request)
        assert final.error is None
        assert tokens_of(final.text) == expected
        ended_early += len(expected) < request.max_new_tokens
        drafts = [tokens_of(d.text) for d in run.drafts[request.key]]
        assert drafts, "a draft before every final"
        assert [d.rev for d in run.drafts[request.key]] == list(range(len(drafts)))
        for draft in drafts:  # the greedy prefix as it grows
            assert expected[: len(draft)] == draft
        assert [len(d) for d in drafts] == sorted(len(d) for d in drafts)
    assert ended_early == len(SOURCES)  # the copying model ends with </s>, not at its budget
    copied = [marian.denoiser.decode(tokens_of(run.finals[r.key].text)) for r in requests[:6]]
    assert sum(c == s for c, s in zip(copied, SOURCES, strict=False)) >= 4  # it copies what it learnt


def test_a_window_decodes_the_same_alone_as_joining_and_leaving_a_running_batch(marian: MarianModel) -> None:
    requests = [request_for(marian, i, s) for i, s in enumerate(SOURCES)]
    alone = {r.key: drive(marian.denoiser, {0: [r]}).finals[r.key].text for r in requests}
    # two places in the batch: windows leave as they finish and the queued ones join mid-decoding;
    # others join at later steps while the first ones are half way
    staggered = drive(marian.denoiser, {0: requests[:3], 2: requests[3:5], 5: requests[5:]}, max_batch=3)
    assert max(staggered.batch_sizes) == 3
    assert len(set(staggered.batch_sizes)) > 1  # the batch's members changed between steps
    assert {key: f.text for key, f in staggered.finals.items()} == alone


def test_a_sequence_released_mid_batch_leaves_the_others_untouched(marian: MarianModel) -> None:
    denoiser = marian.denoiser
    requests = [request_for(marian, i, s) for i, s in enumerate(SOURCES[:3])]
    for seq_id, request in enumerate(requests):
        denoiser.start(seq_id, request)
    first = denoiser.step([0, 1, 2], [16, 16, 16])
    denoiser.release(1)  # aborted: nobody reads it any more
    later = [denoiser.step([0, 2], [15, 15]) for _ in range(2)]
    denoiser.start(7, requests[1])  # a newcomer joins the two running ones
    joined = denoiser.step([0, 2, 7], [13, 13, 16])
    for seq_id in (0, 2, 7):
        denoiser.release(seq_id)
    expected = [greedy(marian, r) for r in requests]
    assert [first[0].tokens[0], *(s[0].tokens[1 + i] for i, s in enumerate(later))] == list(expected[0][:3])
    assert [first[2].tokens[0], *(s[1].tokens[1 + i] for i, s in enumerate(later))] == list(expected[2][:3])
    assert (joined[2].tokens[0], joined[2].settled) == (expected[1][0], 1)
    assert (joined[0].settled, joined[0].done) == (4, False)


def test_the_budget_ends_a_window_with_generates_forced_end(marian: MarianModel) -> None:
    long = request_for(marian, 0, SOURCES[-2])
    short = replace(long, max_new_tokens=3)
    run = drive(marian.denoiser, {0: [short]})
    final = tokens_of(run.finals[short.key].text)
    assert final == greedy(marian, short)  # generate() forces </s> as the budget's last token
    assert len(final) == 2


def test_blocks_follow_one_another_and_a_block_is_checked_when_appended(marian: MarianModel) -> None:
    denoiser = MarianGreedyDenoiser(
        marian.denoiser.model, marian.tokenizer, marian.denoiser.rules, block_length=4
    )
    request = request_for(marian, 0, SOURCES[-2])
    run = drive(denoiser, {0: [request]})
    assert tokens_of(run.finals[request.key].text) == greedy(marian, request)  # over several blocks
    denoiser.start(1, request)
    results = [denoiser.step([1], [4 - i]) for i in range(4)]
    assert [(r[0].settled, r[0].done) for r in results] == [(1, False), (2, False), (3, False), (4, True)]
    with pytest.raises(EngineError, match="no position left"):
        denoiser.step([1], [1])
    with pytest.raises(EngineError, match="is not the decoded"):
        denoiser.next_block(1, (1, 2, 3, 4))
    denoiser.next_block(1, results[-1][0].tokens)
    assert denoiser.step([1], [4])[0].settled == 1
    denoiser.release(1)


def test_revising_a_sequence_decodes_its_new_source_from_the_start(marian: MarianModel) -> None:
    denoiser = marian.denoiser
    old, new = request_for(marian, 0, SOURCES[0]), request_for(marian, 0, SOURCES[1])
    denoiser.start(3, old)
    denoiser.step([3], [16])
    denoiser.revise(3, new)
    first = denoiser.step([3], [16])[0]
    denoiser.release(3)
    assert (first.tokens[0], first.settled) == (greedy(marian, new)[0], 1)


def test_the_pair_comes_from_the_checkpoint_or_from_the_spec(tiny_marian: Path, tmp_path: Path) -> None:
    assert describe_spec(TranslatorSpec.parse(str(tiny_marian))) == (tiny_marian, ("es", "en"))
    bare = tmp_path / "my-marian"
    shutil.copytree(tiny_marian, bare)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("source_lang"), config.pop("target_lang")
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelResolutionError, match=r"--translator .*my-marian:SRC:TGT"):
        describe_spec(TranslatorSpec.parse(str(bare)))
    assert TranslatorSpec.parse(f"{bare}:pt-BR:en") == TranslatorSpec(str(bare), ("pt-BR", "en"))
    assert describe_spec(TranslatorSpec.parse(f"{bare}:pt-BR:en"))[1] == ("pt-BR", "en")
    renamed = tmp_path / "opus-mt-de-fr"
    shutil.copytree(bare, renamed)
    assert describe_spec(TranslatorSpec.parse(str(renamed)))[1] == ("de", "fr")  # opus-mt's name
    with pytest.raises(ValueError, match="not a language tag"):
        TranslatorSpec.parse(f"{bare}:spanish!:en")
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelResolutionError, match="not a Hugging Face Marian checkpoint"):
        describe_spec(TranslatorSpec.parse(str(other)))


def test_a_window_in_another_pair_is_refused_and_pairs_pool_into_one_card(marian: MarianModel) -> None:
    with pytest.raises(EngineError, match=r"translates es -> en only, not en -> es"):
        marian.request_for(WindowJob(CanvasKey("s", "es", 0), "Hello.", (), "en", "es", 0))
    other = load_user_translator(TranslatorSpec(str(marian.resolved.path), ("en", "pt-BR")))
    card = pooled_card([marian.card, other.card])
    assert card.pairs == (("es", "en"), ("en", "pt-BR"))
    assert [card.serves(*pair) for pair in [("es-MX", "en"), ("en", "pt"), ("es", "pt")]] == [
        True,
        True,
        False,
    ]


def test_generation_settings_the_backend_would_not_apply_are_refused(marian: MarianModel) -> None:
    config = marian.denoiser.model.generation_config
    rules = GreedyRules.of(config, marian.denoiser.model.config)
    pad = marian.tokenizer.pad_token_id
    assert (rules.banned, rules.forced_eos_token_id, rules.start_token_id) == ((pad,), 0, pad)
    changed = type(config).from_dict(
        {**config.to_dict(), "repetition_penalty": 1.3, "no_repeat_ngram_size": 3}
    )
    with pytest.raises(ModelResolutionError, match=r"repetition_penalty=1\.3, no_repeat_ngram_size=3"):
        GreedyRules.of(changed, marian.denoiser.model.config)
