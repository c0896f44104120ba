"""Offline model resolution, model cards, prompt templates and window-job requests on real checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import transformers
from transformers import GenerationConfig
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    DiffusionGemmaGenerationConfig,
    EntropyBoundSamplerConfig,
)

from engine.diffusion.config import GemmaSettings
from engine.embedded import BOS_ID, EMBEDDED_NAME, ensure_embedded
from engine.errors import EngineError, ModelResolutionError
from engine.models import (
    diffusion_defaults,
    packaged_model_dirs,
    packaged_models_dir,
    read_card,
    resolve_model,
)
from engine.prompts import ChatTemplate, ContextEntry, TaggedTemplate
from engine.runtime import LoadedModel, load_model
from engine.training.export import verify_checksums
from engine.types import CanvasKey, DiffusionParams, EarlyExitParams, WindowJob

CHAT_TEMPLATE = (
    "{% for message in messages %}<turn>{{ message['role'] }}\n{{ message['content'] }}</turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<turn>assistant\n{% endif %}"
)
CONTEXT = (
    ContextEntry(source="First.", target="Primeiro."),
    ContextEntry(source="Second.", target="Segundo."),
    ContextEntry(source="Third.", target="Terceiro."),
)


def snapshot(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def embedded_tokenizer(livecanvas_cache: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(ensure_embedded(), local_files_only=True)


@pytest.fixture
def chat_tokenizer(livecanvas_cache: Path) -> Any:
    tokenizer = transformers.AutoTokenizer.from_pretrained(ensure_embedded(), local_files_only=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(scope="module")
def loaded(livecanvas_cache: Path) -> LoadedModel:
    """The placeholder: byte-level tokens and a 1,024-token window make the budget arithmetic exact."""
    return load_model("placeholder")


# -- resolve_model ---------------------------------------------------------------------------------


def test_the_placeholder_is_created_in_the_cache_dir_and_reused(tmp_path: Path) -> None:
    first = resolve_model("placeholder", cache_dir=tmp_path)
    assert first.spec == "placeholder"
    assert first.path == tmp_path / "models" / EMBEDDED_NAME
    assert (first.path / "config.json").is_file()
    assert (first.path / "livecanvas.json").is_file()
    assert json.loads((first.path / "livecanvas.json").read_text())["name"] == EMBEDDED_NAME
    written = snapshot(first.path)
    assert "model.safetensors" in written or any(name.endswith(".safetensors") for name in written)
    second = resolve_model("placeholder", cache_dir=tmp_path)
    assert second.path == first.path
    assert snapshot(second.path) == written  # not written again
    assert [p.name for p in (tmp_path / "models").iterdir()] == [EMBEDDED_NAME]  # no staging left over


def test_no_spec_means_the_shipped_translators_verified_by_their_checksums(livecanvas_cache: Path) -> None:
    resolved = resolve_model(None)
    assert resolved.spec == "embedded"
    assert resolved.path == packaged_models_dir()
    assert all(verify_checksums(directory) == [] for directory in packaged_model_dirs())
    assert not (livecanvas_cache / "models" / EMBEDDED_NAME).exists()  # no placeholder made


def test_a_local_checkpoint_directory_resolves(tiny_checkpoint: Path) -> None:
    resolved = resolve_model(str(tiny_checkpoint))
    assert resolved.path == tiny_checkpoint
    assert resolved.spec == str(tiny_checkpoint)


def test_a_directory_without_config_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelResolutionError, match=r"config\.json or canvas\.safetensors"):
        resolve_model(str(tmp_path))


def test_a_hub_id_not_in_the_local_cache_is_refused_without_downloading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_home, empty_cache = tmp_path / "hf-home", tmp_path / "hf-cache"
    empty_home.mkdir()
    empty_cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(empty_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty_cache))
    # huggingface_hub reads the variables once, at import: point its resolved setting there too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(empty_cache))
    with pytest.raises(ModelResolutionError) as refused:
        resolve_model("google/diffusiongemma-26B-A4B-it")
    message = str(refused.value)
    assert "google/diffusiongemma-26B-A4B-it" in message
    assert "never downloads" in message
    assert list(empty_cache.iterdir()) == []  # nothing was fetched
    assert list(empty_home.iterdir()) == []


@pytest.mark.parametrize(
    "spec",
    ["definitely not a model", "a/b/c", "./no/such/dir", "/no/such/checkpoint", "~/no-such-livecanvas-model"],
)
def test_a_nonsense_spec_is_refused(spec: str) -> None:
    with pytest.raises(ModelResolutionError, match="neither 'embedded'"):
        resolve_model(spec)


def test_a_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text("{}")
    with pytest.raises(ModelResolutionError):
        resolve_model(str(config))


# -- model cards -----------------------------------------------------------------------------------


def test_generation_config_values_become_diffusion_params() -> None:
    config = DiffusionGemmaGenerationConfig(
        max_denoising_steps=20,
        t_min=0.0,  # falsy but set: kept
        t_max=1.5,
        stability_threshold=0,
        confidence_threshold=0.02,
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=0.3),
    )
    assert diffusion_defaults(config) == DiffusionParams(max_denoising_steps=20, entropy_bound=0.3)
    assert GemmaSettings.of(config) == GemmaSettings(
        t_min=0.0, t_max=1.5, stability_threshold=0, confidence_threshold=0.02
    )


def test_unset_generation_config_values_fall_back_to_the_defaults() -> None:
    assert diffusion_defaults(GenerationConfig()) == DiffusionParams()
    assert GemmaSettings.of(GenerationConfig()) == GemmaSettings()
    partial = DiffusionGemmaGenerationConfig(max_denoising_steps=7)
    assert diffusion_defaults(partial) == DiffusionParams(max_denoising_steps=7)


def test_a_chat_tokenizer_without_a_card_gets_the_chat_prompt(tmp_path: Path, chat_tokenizer: Any) -> None:
    checkpoint = tmp_path / "some-instruct-model"
    checkpoint.mkdir()
    card = read_card(checkpoint, chat_tokenizer, DiffusionGemmaGenerationConfig(max_denoising_steps=9))
    assert card.prompt_kind == "chat"
    assert card.name == "some-instruct-model"
    assert card.trained is True
    assert card.diffusion == DiffusionParams(max_denoising_steps=9)
    assert card.early_exit == EarlyExitParams()


def test_a_tokenizer_without_chat_template_gets_the_tagged_prompt(
    tmp_path: Path, embedded_tokenizer: Any
) -> None:
    assert embedded_tokenizer.chat_template is None
    card = read_card(tmp_path, embedded_tokenizer, GenerationConfig())
    assert card.prompt_kind == "tagged"


def test_a_card_file_overrides_the_guess(tmp_path: Path, chat_tokenizer: Any) -> None:
    card_file = {"name": "mine", "prompt": "tagged", "trained": False, "early_exit": {"draft_step": 3}}
    (tmp_path / "livecanvas.json").write_text(json.dumps(card_file))
    card = read_card(tmp_path, chat_tokenizer, GenerationConfig())
    assert (card.name, card.prompt_kind, card.trained) == ("mine", "tagged", False)
    assert card.early_exit == EarlyExitParams(draft_step=3)


def test_a_chat_checkpoint_on_disk_loads_with_the_chat_template(
    tmp_path: Path, livecanvas_cache: Path, chat_tokenizer: Any
) -> None:
    checkpoint = tmp_path / "chat-checkpoint"
    shutil.copytree(ensure_embedded(), checkpoint)
    (checkpoint / "livecanvas.json").unlink()
    chat_tokenizer.save_pretrained(checkpoint)
    model = load_model(str(checkpoint))
    assert model.card.prompt_kind == "chat"
    assert isinstance(model.template, ChatTemplate)
    assert model.card.diffusion.max_denoising_steps == 12  # from the checkpoint's generation config
    job = WindowJob(CanvasKey("s", "pt", 0), "Hello.", (), "en", "pt", submitted_ns=0)
    text = model.tokenizer.decode(model.request_for(job).prompt_ids)
    assert text.startswith("<turn>user\nTranslate this live caption from English to Portuguese.")
    assert text.endswith("Caption: Hello.</turn>\n<turn>assistant\n")


# -- prompt templates ------------------------------------------------------------------------------


def test_tagged_template_renders_tags_context_and_languages(embedded_tokenizer: Any) -> None:
    template = TaggedTemplate(embedded_tokenizer)
    ids = template.render(
        source="Good morning.", context=CONTEXT[:2], source_lang="en", target_lang="pt", budget=1000
    )
    assert ids[0] == BOS_ID
    assert embedded_tokenizer.decode(ids) == (
        "<bos><ctx>First.<sep>Primeiro.<ctx>Second.<sep>Segundo.<src>en:Good morning.<tgt>pt:"
    )
    bare = template.render(
        source="Good morning.", context=(), source_lang="en", target_lang="pt", budget=1000
    )
    assert embedded_tokenizer.decode(bare) == "<bos><src>en:Good morning.<tgt>pt:"
    # tags are single special tokens, text is byte-level: one id per byte
    assert len(bare) == 3 + len("en:Good morning.pt:")


def test_tagged_template_drops_the_oldest_context_first(embedded_tokenizer: Any) -> None:
    template = TaggedTemplate(embedded_tokenizer)

    def render(context: tuple[ContextEntry, ...], budget: int) -> list[int]:
        return template.render(
            source="Good morning.", context=context, source_lang="en", target_lang="pt", budget=budget
        )

    lengths = [len(render(CONTEXT[first:], 1000)) for first in range(4)]
    assert lengths == sorted(lengths, reverse=True)
    assert len(set(lengths)) == 4
    expected = [
        "<bos><ctx>First.<sep>Primeiro.<ctx>Second.<sep>Segundo.<ctx>Third.<sep>Terceiro.",
        "<bos><ctx>Second.<sep>Segundo.<ctx>Third.<sep>Terceiro.",
        "<bos><ctx>Third.<sep>Terceiro.",
        "<bos>",
    ]
    for first, prefix in enumerate(expected):
        # from an exact fit up to one token short of the next-larger rendering: exactly this much context
        for budget in (lengths[first], (lengths[first - 1] - 1) if first else 1000):
            ids = render(CONTEXT, budget)
            assert len(ids) <= budget
            assert embedded_tokenizer.decode(ids) == prefix + "<src>en:Good morning.<tgt>pt:"


def test_tagged_template_refuses_a_source_over_the_budget(embedded_tokenizer: Any) -> None:
    template = TaggedTemplate(embedded_tokenizer)
    with pytest.raises(EngineError, match="over the budget of 50"):
        template.render(source="x" * 60, context=CONTEXT, source_lang="en", target_lang="pt", budget=50)


def test_chat_template_renders_the_instruction_with_language_names_and_context(chat_tokenizer: Any) -> None:
    template = ChatTemplate(chat_tokenizer)
    ids = template.render(
        source="Good morning.", context=CONTEXT[1:], source_lang="en", target_lang="pt-BR", budget=1000
    )
    assert all(isinstance(token, int) for token in ids)
    assert chat_tokenizer.decode(ids) == (
        "<turn>user\n"
        "Translate this live caption from English to Brazilian Portuguese. Reply with the translation only.\n"
        "Earlier captions, for context (do not translate them again):\n"
        "- Second. => Segundo.\n"
        "- Third. => Terceiro.\n"
        "Caption: Good morning.</turn>\n"
        "<turn>assistant\n"
    )
    no_context = chat_tokenizer.decode(
        template.render(source="Hi.", context=(), source_lang="fr", target_lang="xx", budget=1000)
    )
    assert "from French to xx." in no_context
    assert "Earlier captions" not in no_context


def test_chat_template_drops_the_oldest_context_first(chat_tokenizer: Any) -> None:
    template = ChatTemplate(chat_tokenizer)
    with_two = template.render(
        source="Good morning.", context=CONTEXT[1:], source_lang="en", target_lang="pt", budget=1000
    )
    ids = template.render(
        source="Good morning.", context=CONTEXT, source_lang="en", target_lang="pt", budget=len(with_two)
    )
    assert ids == with_two
    text = chat_tokenizer.decode(ids)
    assert "First." not in text
    assert "- Third. => Terceiro." in text
    with pytest.raises(EngineError):
        template.render(source="Good morning.", context=(), source_lang="en", target_lang="pt", budget=20)


# -- LoadedModel.request_for -----------------------------------------------------------------------


def job(window: int, source: str, *, track: str = "pt", context: tuple[ContextEntry, ...] = ()) -> WindowJob:
    return WindowJob(
        key=CanvasKey("s", track, window),
        source=source,
        context=context,
        source_lang="en",
        target_lang=track,
        submitted_ns=123,
    )


@pytest.mark.parametrize("length", [1, 20, 30, 100, 400, 500])
def test_request_output_budget_is_whole_blocks_and_prompt_fits(loaded: LoadedModel, length: int) -> None:
    block = loaded.denoiser.canvas_length
    limit = loaded.denoiser.max_context_tokens
    request = loaded.request_for(job(0, "a" * length, context=CONTEXT))
    assert request.max_new_tokens % block == 0
    assert request.max_new_tokens >= block
    room = min(2 * length, (limit // 2) // block * block)  # twice the source, up to half the context
    assert request.max_new_tokens >= room
    assert len(request.prompt_ids) + request.max_new_tokens <= limit
    assert request.submitted_ns == 123
    assert request.diffusion == loaded.card.diffusion
    assert request.early_exit == loaded.card.early_exit


def test_request_drops_context_that_does_not_fit(loaded: LoadedModel) -> None:
    # each entry is 112 prompt tokens; the 300-token source leaves room for two of the three
    long_context = tuple(ContextEntry(source="s" * 50, target=f"t{i}" * 30) for i in range(3))
    request = loaded.request_for(job(0, "b" * 300, context=long_context))
    prompt = loaded.tokenizer.decode(request.prompt_ids)
    assert len(request.prompt_ids) + request.max_new_tokens <= loaded.denoiser.max_context_tokens
    assert prompt.count("<ctx>") == 2
    assert "t0" not in prompt  # the oldest went first
    assert prompt.index("t1") < prompt.index("t2")
    assert prompt.endswith("<src>en:" + "b" * 300 + "<tgt>pt:")


def test_request_refuses_a_source_longer_than_the_context(loaded: LoadedModel) -> None:
    with pytest.raises(EngineError):
        loaded.request_for(job(0, "c" * 20_000))


def test_request_seed_is_stable_per_key_and_differs_between_keys(loaded: LoadedModel) -> None:
    seed = loaded.request_for(job(3, "Hello.")).seed
    assert loaded.request_for(job(3, "Something else entirely.", context=CONTEXT)).seed == seed
    others = {
        loaded.request_for(job(4, "Hello.")).seed,
        loaded.request_for(job(3, "Hello.", track="es")).seed,
        loaded.request_for(WindowJob(CanvasKey("t", "pt", 3), "Hello.", (), "en", "pt", submitted_ns=0)).seed,
    }
    assert seed not in others
    assert len(others) == 3
    assert all(0 <= s <= 0x7FFF_FFFF for s in (*others, seed))


def test_request_seed_follows_the_model_seed(loaded: LoadedModel) -> None:
    reseeded = LoadedModel(
        resolved=loaded.resolved,
        denoiser=loaded.denoiser,
        template=loaded.template,
        card=loaded.card,
        tokenizer=loaded.tokenizer,
        seed=1,
    )
    assert reseeded.request_for(job(0, "Hi.")).seed != loaded.request_for(job(0, "Hi.")).seed


def test_job_overrides_take_precedence_over_the_card(loaded: LoadedModel) -> None:
    params, early = DiffusionParams(max_denoising_steps=3), EarlyExitParams(draft_step=1)
    overridden = WindowJob(
        CanvasKey("s", "pt", 0), "Hi.", (), "en", "pt", submitted_ns=0, diffusion=params, early_exit=early
    )
    request = loaded.request_for(overridden)
    assert (request.diffusion, request.early_exit) == (params, early)


def test_language_tracks_match_exactly_or_by_base_language() -> None:
    from engine.models import match_language

    assert match_language("pt-BR", ("pt-BR",)) == "pt-BR"
    assert match_language("pt-br", ("pt-BR",)) == "pt-BR"
    assert match_language("pt", ("pt-BR",)) == "pt-BR"
    assert match_language("es", ("pt-BR",)) is None
    assert match_language("es", ()) == "es"  # no restriction: any language the prompt can name


def test_the_card_names_its_target_languages(tmp_path: Path, embedded_tokenizer: Any) -> None:
    (tmp_path / "livecanvas.json").write_text(json.dumps({"languages": {"source": "en", "target": "pt-BR"}}))
    assert read_card(tmp_path, embedded_tokenizer, GenerationConfig()).target_languages == ("pt-BR",)
    (tmp_path / "livecanvas.json").write_text(json.dumps({"languages": {"target": ["pt-BR", "es"]}}))
    assert read_card(tmp_path, embedded_tokenizer, GenerationConfig()).target_languages == ("pt-BR", "es")


def quantised(model: Any) -> bool:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return any(isinstance(m, DynamicQuantizedLinear) for m in model.modules())


def test_the_default_is_the_fast_sampler_on_the_float_model(loaded: LoadedModel) -> None:
    assert loaded.denoiser.sampler == "fast"
    assert not quantised(loaded.denoiser.model)


def test_int8_and_the_sampler_can_be_chosen(livecanvas_cache: Path) -> None:
    exact = load_model("placeholder", sampler="exact", int8=True)
    assert exact.denoiser.sampler == "exact"
    assert quantised(exact.denoiser.model)


def test_serve_flags_and_environment_choose_sampler_and_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    from livecanvas.cli import build_parser
    from livecanvas.cli_serve import server_config

    def config(*flags: str) -> Any:
        return server_config(build_parser().parse_args(["serve", *flags]))

    assert (config().sampler, config().int8) == ("fast", None)  # None: the model's own default
    assert config("--sampler", "exact").sampler == "exact"
    assert config("--int8").int8 is True
    monkeypatch.setenv("LIVECANVAS_INT8", "on")
    assert config().int8 is True
    assert config("--no-int8").int8 is False
    monkeypatch.setenv("LIVECANVAS_INT8", "maybe")
    with pytest.raises(SystemExit, match="LIVECANVAS_INT8 must be 1 or 0"):
        config()


def test_the_server_config_takes_a_known_sampler_only() -> None:
    """One meaning for the setting: an unknown sampler is refused, never read as one of the two."""
    from stream.config import ServerConfig

    assert ServerConfig(sampler="exact").sampler == "exact"
    with pytest.raises(ValueError, match="sampler must be one of exact, fast"):
        ServerConfig(sampler="greedy")  # type: ignore[arg-type]
