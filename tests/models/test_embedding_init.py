"""`model.embedding_init`: `uniform` draws word vectors from U[-0.25, 0.25] (Kim 2014) for
either text network, `normal` (the default) keeps PyTorch's N(0, 1), and padding stays zero.
A bad name is refused before anything is built: tests/test_bad_input.py."""

from __future__ import annotations

import pytest
import torch

from labrun.job.build import build


@pytest.mark.parametrize("model", ["lstm_classifier", "kim_cnn"])
def test_uniform_draws_small_word_vectors_and_keeps_padding_zero(make_cfg, model: str) -> None:
    def embedding(how: str) -> torch.Tensor:
        cfg = make_cfg("experiment=trec_lstm", f"model={model}", f"model.embedding_init={how}")
        torch.manual_seed(0)
        return build(cfg.model, vocab_size=500, num_classes=6).net.embedding.weight.detach()

    uniform, normal = embedding("uniform"), embedding("normal")
    assert uniform[1:].abs().max() <= 0.25
    assert 0.14 < uniform[1:].std() < 0.15  # U[-a, a] has std a / sqrt(3) = 0.144
    assert 0.95 < normal[1:].std() < 1.05  # N(0, 1): PyTorch's default, the old behaviour
    assert not uniform[0].any() and not normal[0].any()  # the padding row


@pytest.mark.parametrize("model", ["lstm_classifier", "kim_cnn"])
def test_the_default_is_pytorchs_normal(make_cfg, model: str) -> None:
    """A recipe that does not set it (agnews_lstm) gets N(0, 1), and so does a run stored
    before the key existed (the key dropped: the class's default)."""
    over = [f"model={model}", "model.embedding_dim=300"]
    assert make_cfg("experiment=agnews_lstm", *over).model.embedding_init == "normal"
    cfg = make_cfg("experiment=trec_lstm", *over, "~model.embedding_init")
    assert "embedding_init" not in cfg.model
    torch.manual_seed(0)
    default = build(cfg.model, vocab_size=500, num_classes=6).net.embedding.weight
    torch.manual_seed(0)
    reference = torch.nn.Embedding(500, 300, padding_idx=0).weight
    assert torch.equal(default, reference)
