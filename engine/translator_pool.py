"""Several loaded translators behind one engine worker's interface: the server's ``--model`` plus each
``--translator``, each model owned by its own :class:`engine.worker.EngineWorker` thread.

A window job goes to the first model, in the order given, that translates its stream's language into
its track's (the ``--translator`` models come before the ``--model``, so a user's translator takes a
pair over from the embedded one). Cancellations go to every worker (a key lives in one of them at
most); stopping stops them all. The pool's card is the union of the models' pairs, which admission
checks tracks against, ``/healthz`` lists and a refused track names. Every member must name its pairs
(the canvas translators and Marian checkpoints do; a DiffusionGemma checkpoint, which takes any source
language, cannot be pooled).

Threading: ``submit``, ``cancel`` and ``stop`` may be called from any thread, as on one worker; each
worker calls ``emit`` and ``on_step`` on its own thread.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields

from engine.errors import ModelResolutionError
from engine.models import ModelCard, ResolvedModel
from engine.runtime import ServingModel
from engine.types import CanvasKey, Final, WindowJob
from engine.worker import EngineEvent, EngineWorker, WorkerStats


@dataclass(frozen=True)
class PooledModel:
    """What the server knows of a pool once every model has loaded: the models, in routing order,
    and the card that offers the union of their pairs."""

    models: tuple[ServingModel, ...]
    card: ModelCard

    @property
    def resolved(self) -> ResolvedModel:
        """Where the last model (the server's ``--model``) came from."""
        return self.models[-1].resolved


def pooled_card(cards: Sequence[ModelCard]) -> ModelCard:
    """One card offering every pair of ``cards``; ``ModelResolutionError`` if one of them names none."""
    unnamed = [c.name for c in cards if not c.pairs]
    if unnamed:
        raise ModelResolutionError(
            f"model {', '.join(unnamed)} takes any source language and cannot be served beside "
            "--translator models; use --model embedded (or a canvas translator) with --translator"
        )
    pairs = tuple(dict.fromkeys(pair for card in cards for pair in card.pairs))
    return ModelCard(
        name=" + ".join(c.name for c in cards),
        prompt_kind="source",
        trained=all(c.trained for c in cards),
        diffusion=cards[-1].diffusion,
        early_exit=cards[-1].early_exit,
        target_languages=tuple(dict.fromkeys(target for _, target in pairs)),
        pairs=pairs,
    )


class TranslatorPool:
    """See the module docstring. ``loads`` are in routing order; the other arguments are each
    worker's (:class:`engine.worker.EngineWorker`)."""

    def __init__(
        self,
        loads: Sequence[Callable[[], ServingModel]],
        emit: Callable[[list[EngineEvent]], None],
        *,
        max_batch: int = 32,
        torch_threads: int | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        self._emit = emit
        self.workers = [
            EngineWorker(load, emit, max_batch=max_batch, torch_threads=torch_threads, on_step=on_step)
            for load in loads
        ]
        self._routes: list[tuple[ModelCard, EngineWorker]] | None = None

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def wait_ready(self, timeout: float | None = None) -> PooledModel:
        """Block until every model has loaded; re-raises the first load failure."""
        models = tuple(worker.wait_ready(timeout) for worker in self.workers)
        card = pooled_card([m.card for m in models])
        self._routes = [(m.card, w) for m, w in zip(models, self.workers, strict=True)]
        return PooledModel(models, card)

    def submit(self, job: WindowJob) -> None:
        for card, worker in self._routes or ():
            if card.serves(job.source_lang, job.target_lang):
                worker.submit(job)
                return
        if not job.provisional:  # admission refuses such tracks; a job that slips by still gets its final
            error = f"no loaded translator translates {job.source_lang} -> {job.target_lang}"
            self._emit([Final.failed(job.key, error)])

    def cancel(self, keys: Collection[CanvasKey]) -> None:
        for worker in self.workers:
            worker.cancel(keys)

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        for worker in self.workers:
            worker.stop(drain=drain, timeout=timeout)

    @property
    def alive(self) -> bool:
        return all(worker.alive for worker in self.workers)

    @property
    def stats(self) -> WorkerStats:
        """Every worker's counters added up (the largest batch: the largest any worker saw)."""
        total = WorkerStats()
        for worker in self.workers:
            for name in (f.name for f in fields(WorkerStats)):
                mine, theirs = getattr(total, name), getattr(worker.stats, name)
                setattr(total, name, max(mine, theirs) if name == "max_batch_seen" else mine + theirs)
        return total
