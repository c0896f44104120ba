"""DiffusionGemma's decoding rules as pure, batched tensor functions.

Every decoding path in livecanvas (the continuous-batching engine, tests that replay ``generate()``)
uses these functions, so there is one acceptance rule, one stopping rule and one temperature schedule.
They reproduce ``transformers.models.diffusion_gemma.generation_diffusion_gemma`` bit for bit for a
single canvas and treat each row of a batch independently, so a batch of many canvases gives each the
same result as running it alone.

Shapes: ``B`` canvases, ``L`` canvas length, ``V`` vocabulary size.
"""

from __future__ import annotations

import torch


def step_temperature(steps_remaining: int, max_steps: int, t_min: float, t_max: float) -> torch.Tensor:
    """Linear temperature schedule: ``t = t_min + (t_max - t_min) * n / N`` with ``n`` steps remaining.

    Computed exactly as DiffusionGemma does (float32 from an int32 step counter), so that logits divided
    by it match ``generate()`` bit for bit.
    """
    remaining = torch.tensor(steps_remaining, dtype=torch.int32)
    return t_min + ((t_max - t_min) * (remaining / max_steps))  # () float32


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each position's categorical distribution. (B, L, V) -> (B, L)."""
    return entropy_and_probs(logits)[0]


def entropy_and_probs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (B, L) and probabilities (B, L, V) of (B, L, V) finite logits.

    The arithmetic of ``torch.distributions.Categorical(logits=...).entropy()`` (which
    ``generate()`` uses) step by step, so the entropies are bit for bit the same: normalise by the
    log-sum-exp, soft-max the normalised logits, ``-sum(p * log p)``. Categorical also clamps the
    log-probabilities at the dtype's minimum, a no-op for finite logits, and validates its argument;
    both are whole passes over (B, L, V) that change nothing here, so they are left out.
    """
    normalised = logits - logits.logsumexp(dim=-1, keepdim=True)  # (B, L, V) log-probabilities
    probs = torch.softmax(normalised, dim=-1)  # (B, L, V)
    return -(normalised * probs).sum(dim=-1), probs


def accept_by_entropy_bound(
    current: torch.Tensor,
    proposed: torch.Tensor,
    entropy: torch.Tensor,
    entropy_bound: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy-bounded acceptance (Ben-Hamu et al. 2025, arXiv:2505.24857, the EB-sampler).

    Per canvas, accept the k lowest-entropy positions such that
    ``sum_{i<=k} H_i - max_{i<=k} H_i <= entropy_bound``: an upper bound on the mutual information
    between the accepted tokens, so they can be committed in parallel as if independent.

    Args:
        current: (B, L) canvas before this step.
        proposed: (B, L) tokens sampled from the denoiser.
        entropy: (B, L) per-position entropy of the processed logits.
        entropy_bound: (B,) bound per canvas.

    Returns:
        ``(accepted_canvas, accepted_mask)``, both (B, L).
    """
    accepted_mask = acceptance_mask(entropy, entropy_bound)
    return torch.where(accepted_mask, proposed, current), accepted_mask


def acceptance_mask(entropy: torch.Tensor, entropy_bound: torch.Tensor) -> torch.Tensor:
    """The positions :func:`accept_by_entropy_bound` accepts: (B, L) bool from (B, L) entropies and a
    (B,) bound. They depend on the entropies alone, not on the sampled tokens."""
    sorted_entropy, order = torch.sort(entropy, dim=-1, descending=False)  # (B, L)
    cumulative = torch.cumsum(sorted_entropy, dim=-1)  # (B, L)
    # sorted ascending, so the running maximum is the current element
    selected_sorted = cumulative - sorted_entropy <= entropy_bound[:, None]  # (B, L)
    return torch.scatter(torch.zeros_like(selected_sorted), dim=-1, index=order, src=selected_sorted)


def renoise(accepted: torch.Tensor, accepted_mask: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Uniform-state renoising: every position not accepted gets a fresh uniformly drawn token.

    ``noise`` is (B, L) of tokens drawn uniformly from the vocabulary.
    """
    return torch.where(accepted_mask, accepted, noise)


def stable_and_confident(
    argmax_history: torch.Tensor,
    argmax: torch.Tensor,
    mean_entropy: torch.Tensor,
    confidence_threshold: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DiffusionGemma's adaptive stop: the argmax canvas equals each of the last ``S`` argmax canvases
    (stable) and the mean token entropy is below the threshold (confident).

    Args:
        argmax_history: (B, S, L) previous argmax canvases, oldest first; ``-1`` where none yet.
            ``S == 0`` means stability is not required.
        argmax: (B, L) argmax canvas of this step.
        mean_entropy: (B,) mean token entropy of the processed logits.
        confidence_threshold: (B,) threshold per canvas.

    Returns:
        ``(stop, new_history)``: (B,) bool and the history shifted by one with ``argmax`` appended.
    """
    if argmax_history.shape[1] == 0:
        stable = torch.ones(argmax.shape[0], dtype=torch.bool, device=argmax.device)
        new_history = argmax_history
    else:
        stable = (argmax_history == argmax[:, None, :]).all(dim=-1).all(dim=-1)  # (B,)
        new_history = torch.cat([argmax_history[:, 1:], argmax[:, None, :]], dim=1)
    confident = mean_entropy < confidence_threshold
    return stable & confident, new_history


def truncate_at_eos(tokens: list[int], eos_ids: frozenset[int]) -> tuple[list[int], bool]:
    """Tokens before the first end-of-sequence id, and whether one was found."""
    for position, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:position], True
    return tokens, False
