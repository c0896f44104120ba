"""The batched step loop on a real DiffusionGemma model: parity with ``generate()`` and batching.

The model is a tiny randomly initialised checkpoint loaded with ``from_pretrained``; parity with
``generate()`` is exact (same tokens at every step), since the engine draws from per-canvas generators
in ``generate()``'s order and both run one canvas at a time. A canvas in a batch gets the same results
as alone to float rounding (:func:`same_up_to_rounding`), which is what holds on every CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from engine.diffusion.config import GemmaSettings
from engine.diffusion.denoiser import StepResult
from engine.diffusion.gemma import DiffusionGemmaDenoiser
from engine.errors import EngineError
from engine.types import CanvasKey, CanvasRequest, DiffusionParams
from tests.engine_driver import drive

EOS = 1


class DraftRecorder:
    """A streamer as ``generate()`` expects: ``put_draft`` receives the argmax canvas after each step."""

    def __init__(self) -> None:
        self.drafts: list[tuple[int, ...]] = []

    def put(self, value: Any) -> None:
        pass

    def put_draft(self, value: torch.Tensor) -> None:
        self.drafts.append(tuple(value[0].tolist()))

    def end(self) -> None:
        pass


def reference(
    model: Any,
    prompt: list[int],
    seed: int,
    params: DiffusionParams,
    settings: GemmaSettings,
    max_new_tokens: int,
) -> tuple[list[int], list[tuple[int, ...]]]:
    torch.manual_seed(seed)
    recorder = DraftRecorder()
    output = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=max_new_tokens,
        max_denoising_steps=params.max_denoising_steps,
        t_min=settings.t_min,
        t_max=settings.t_max,
        stability_threshold=settings.stability_threshold,
        confidence_threshold=settings.confidence_threshold,
        streamer=recorder,
    )
    return output.sequences[0, len(prompt) :].tolist(), recorder.drafts


def make_request(
    window: int, prompt: list[int], seed: int, params: DiffusionParams, max_new_tokens: int
) -> CanvasRequest:
    return CanvasRequest(
        key=CanvasKey("s", "pt", window),
        prompt_ids=tuple(prompt),
        max_new_tokens=max_new_tokens,
        seed=seed,
        diffusion=params,
    )


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Bit-for-bit comparisons need one thread: with more, torch may split a reduction differently
    for different batch shapes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def denoiser(tiny_model: Any) -> DiffusionGemmaDenoiser:
    """The exact sampler, which matches ``generate()``."""
    return DiffusionGemmaDenoiser(tiny_model, tokenizer=None, eos_token_ids=[EOS])


DEFAULT = GemmaSettings()
CASES = [
    # prompt, seed, params, the checkpoint's settings, max_new_tokens (tiny model: canvas length 16)
    ([2, 10, 11, 12, 13], 42, DiffusionParams(max_denoising_steps=8), DEFAULT, 16),
    ([2, 7, 8], 7, DiffusionParams(max_denoising_steps=5), DEFAULT, 48),  # three blocks
    (
        [2, *range(30, 60)],
        123,
        DiffusionParams(max_denoising_steps=12),
        GemmaSettings(t_min=0.2, t_max=1.5),
        32,
    ),
    # a confidence threshold this loose lets the adaptive stop fire as soon as the argmax is stable
    ([2, 99, 98], 5, DiffusionParams(max_denoising_steps=20), GemmaSettings(confidence_threshold=100.0), 32),
    (
        [2, 99, 98],
        6,
        DiffusionParams(max_denoising_steps=20),
        GemmaSettings(confidence_threshold=100.0, stability_threshold=0),
        16,
    ),
]


@pytest.mark.parametrize(("prompt", "seed", "params", "settings", "max_new_tokens"), CASES)
def test_engine_matches_generate(
    tiny_model: Any,
    prompt: list[int],
    seed: int,
    params: DiffusionParams,
    settings: GemmaSettings,
    max_new_tokens: int,
) -> None:
    expected_tokens, expected_drafts = reference(tiny_model, prompt, seed, params, settings, max_new_tokens)
    denoiser = DiffusionGemmaDenoiser(tiny_model, tokenizer=None, eos_token_ids=[EOS], settings=settings)
    run = drive(denoiser, {0: [make_request(0, prompt, seed, params, max_new_tokens)]})
    key = CanvasKey("s", "pt", 0)
    assert run.argmax_per_step[key] == expected_drafts  # every step of every block
    final = run.finals[key]
    produced = [int(t) for t in final.text.split()] if final.text else []
    cut = expected_tokens.index(EOS) if EOS in expected_tokens else len(expected_tokens)
    assert produced == expected_tokens[:cut]
    assert final.steps == len(expected_drafts)


def test_adaptive_stop_really_fires_in_the_parity_cases(tiny_model: Any) -> None:
    prompt, seed, params, settings, budget = CASES[4]  # no stability needed, any entropy is confident
    denoiser = DiffusionGemmaDenoiser(tiny_model, tokenizer=None, eos_token_ids=[EOS], settings=settings)
    run = drive(denoiser, {0: [make_request(0, prompt, seed, params, budget)]})
    assert run.finals[CanvasKey("s", "pt", 0)].steps == 1 < params.max_denoising_steps


FIRST_STEP_REL = 1e-4  # one forward, nothing fed back: the batch changes only the order of float sums
LATER_REL = 1e-2  # rounding fed back step after step (self-conditioning), and bfloat16 where used


def same_up_to_rounding(together: list[StepResult], alone: list[StepResult]) -> bool:
    """Step by step, one canvas stepped in a batch and alone: the same schedule, the step figures
    equal to rounding, and the same argmax canvas until a step where a near-tie falls the other way.

    A batch changes only the order of the float sums, which the CPU's kernels choose (an AVX2 machine
    sums otherwise than an AVX-512 one, and the ``fast`` sampler's bfloat16 product only runs where
    the CPU has bfloat16), so a first step's figures agree to float rounding, and later steps to
    that rounding fed back through the self-conditioning signal (:data:`LATER_REL`; a batching error,
    such as another row's context or signal, moves them by far more). An argmax between two logits
    closer than that may fall the other way, and from there the canvases may part for good (a block's
    argmax is the next block's context), so the comparison ends at the first differing canvas, after
    checking that only a few positions differ. Returns whether they agreed to the end."""
    assert len(together) == len(alone)  # every block runs the same steps
    for step, (batched, lone) in enumerate(zip(together, alone, strict=True)):
        rel = FIRST_STEP_REL if step == 0 else LATER_REL
        assert batched.mean_entropy == pytest.approx(lone.mean_entropy, rel=rel), step
        if batched.tokens != lone.tokens:
            differing = sum(a != b for a, b in zip(batched.tokens, lone.tokens, strict=True))
            assert differing <= 2, (step, batched.tokens, lone.tokens)  # near-ties, not another canvas
            return False
    return True


def test_batch_of_many_equals_each_run_alone_with_staggered_joins(denoiser: DiffusionGemmaDenoiser) -> None:
    requests = [
        make_request(
            w,
            [2, *range(10 + w, 10 + w + 3 * w + 1)],
            seed=100 + w,
            params=DiffusionParams(max_denoising_steps=4 + w % 5),
            max_new_tokens=16 * (1 + w % 3),
        )
        for w in range(8)
    ]
    joins = {0: requests[:3], 2: requests[3:5], 5: requests[5:7], 9: requests[7:]}
    together = drive(denoiser, joins)
    assert max(together.batch_sizes) > 3  # they really shared forwards
    agreed = []
    for request in requests:
        alone = drive(denoiser, {0: [request]})
        key = request.key
        agreed.append(same_up_to_rounding(together.results_per_step[key], alone.results_per_step[key]))
        if agreed[-1]:  # no near-tie on the way: the same drafts and final, to the token
            assert together.finals[key] == alone.finals[key]
            assert together.drafts.get(key) == alone.drafts.get(key)
        assert together.finals[key].steps == alone.finals[key].steps
    assert any(agreed)  # near-ties are rare: windows agree to the end


def test_fast_sampler_keeps_each_canvas_independent_of_its_batch(tiny_model: Any) -> None:
    fast = DiffusionGemmaDenoiser(tiny_model, tokenizer=None, eos_token_ids=[EOS], sampler="fast")
    exact = DiffusionGemmaDenoiser(tiny_model, tokenizer=None, eos_token_ids=[EOS])
    requests = [
        make_request(
            w,
            [2, *range(20 + w, 26 + w)],
            seed=w,
            params=DiffusionParams(max_denoising_steps=6),
            # one block, so every row's context has the same length: with different lengths the
            # padded attention may round differently in the last bit, which is not what this tests
            max_new_tokens=16,
        )
        for w in range(6)
    ]
    together = drive(fast, {0: requests[:3], 3: requests[3:]})
    assert max(together.batch_sizes) == 6
    agreed = []
    for request in requests:
        alone = drive(fast, {0: [request]})
        key = request.key
        agreed.append(same_up_to_rounding(together.results_per_step[key], alone.results_per_step[key]))
        if agreed[-1]:
            assert together.finals[key] == alone.finals[key]
    # another random stream than generate()'s: the runs differ from the exact sampler's somewhere
    reference_run = drive(exact, {0: requests})
    assert any(reference_run.argmax_per_step[r.key] != together.argmax_per_step[r.key] for r in requests)


def test_every_canvas_gets_exactly_one_final_and_its_own_step_count(denoiser: DiffusionGemmaDenoiser) -> None:
    requests = [
        make_request(
            w, [2, 40 + w], seed=w, params=DiffusionParams(max_denoising_steps=3 + w), max_new_tokens=16
        )
        for w in range(5)
    ]
    run = drive(denoiser, {0: requests[:2], 1: requests[2:]}, max_batch=3)
    assert sorted(k.window for k in run.finals) == list(range(5))
    for request in requests:
        assert run.finals[request.key].steps == request.diffusion.max_denoising_steps
    assert max(run.batch_sizes) == 3  # admission cap held


def test_oversized_prompt_is_refused(denoiser: DiffusionGemmaDenoiser) -> None:
    too_long = make_request(0, [2] * denoiser.max_context_tokens, 0, DiffusionParams(), 16)
    with pytest.raises(EngineError, match="exceeds"):
        denoiser.start(0, too_long)


def test_out_of_vocabulary_prompt_is_refused(denoiser: DiffusionGemmaDenoiser) -> None:
    with pytest.raises(EngineError, match="vocabulary"):
        denoiser.start(0, make_request(0, [2, 10_000], 0, DiffusionParams(), 16))
