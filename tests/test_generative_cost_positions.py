"""kv_cache.cached_positions / uncached_positions: the closed forms equal the positions the samplers really run."""
import pytest
import torch

from kd_lessons.generative.kv_cache import cached_generate, cached_positions, uncached_positions
from kd_lessons.generative.transformer import CharTransformer, generate


def _count_positions(model, fn):
    """Positions fed through the token embedding while fn() runs (every forward position passes it once)."""
    seen = []
    handle = model.tok.register_forward_hook(lambda m, inp, out: seen.append(inp[0].numel()))
    try:
        fn()
    finally:
        handle.remove()
    return sum(seen)


@pytest.mark.parametrize("prompt_len,num_tokens", [(4, 12), (10, 1), (3, 13)])
def test_closed_forms_match_the_positions_run(prompt_len, num_tokens):
    torch.manual_seed(0)
    model = CharTransformer(20, 16, 1, 2, 16).eval()
    prompts = torch.randint(0, 20, (3, prompt_len))
    g = torch.Generator().manual_seed(0)
    ran = _count_positions(model, lambda: generate(model, prompts, num_tokens + 6, generator=g))  # crops at 16
    assert ran == uncached_positions(3, prompt_len, num_tokens + 6, 16)
    ran_cached = _count_positions(model, lambda: cached_generate(model, prompts, num_tokens, generator=g))
    assert ran_cached == cached_positions(3, prompt_len, num_tokens)
    assert cached_positions(3, prompt_len, num_tokens) < uncached_positions(3, prompt_len, num_tokens, 16) or \
        num_tokens == 1


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="prompt_len >= 1"):
        cached_positions(1, 0, 3)
    with pytest.raises(ValueError, match="context >= 1"):
        uncached_positions(1, 2, 3, 0)
