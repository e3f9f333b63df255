"""Offline byte-level tokenizers for tiny test pipelines.

The tiny random pipelines in :mod:`ditaccel.testing` need a tokenizer in every text-encoder slot
(CLIP, T5, UMT5, Qwen2), but tests must run without the Hugging Face hub and without any downloaded
vocabulary file. A byte-level BPE with *no merges* needs no data at all: its vocabulary is exactly
the 256 byte-level symbols, so every UTF-8 byte of the input becomes one token and any text can be
encoded. Special tokens (bos/eos/pad/unk and extras such as Qwen's ``<|im_start|>``) are appended
after the byte symbols, so the vocabulary size is ``256 + number of special tokens``.

The ``tokenizers.Tokenizer`` is wrapped as :class:`transformers.PreTrainedTokenizerFast`, which
every diffusers pipeline accepts in place of its model-specific tokenizer class (in transformers 5,
``T5TokenizerFast(tokenizer_object=...)`` does not work, but the generic class does).
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

__all__ = ["BYTE_VOCAB_SIZE", "byte_level_tokenizer"]

#: Number of byte-level symbols, i.e. the ids 0..255 of every tokenizer built here.
BYTE_VOCAB_SIZE = 256


def _special_tokens(
    bos_token: str | None,
    eos_token: str | None,
    pad_token: str,
    unk_token: str | None,
    extra_special_tokens: Sequence[str],
) -> list[str]:
    """The distinct special tokens, in a stable order (bos, eos, pad, unk, extras)."""
    ordered = [bos_token, eos_token, pad_token, unk_token, *extra_special_tokens]
    return list(dict.fromkeys(tok for tok in ordered if tok is not None))


def _post_processor(bos_token: str | None, eos_token: str | None, vocab: dict[str, int]):
    """A TemplateProcessing that wraps single sequences and pairs with the given bos/eos."""
    prefix = [bos_token] if bos_token is not None else []
    suffix = [eos_token] if eos_token is not None else []
    special = [(tok, vocab[tok]) for tok in dict.fromkeys(prefix + suffix)]
    return processors.TemplateProcessing(
        single=[*prefix, "$A", *suffix],
        pair=[*prefix, "$A", *suffix, "$B:1", *suffix],
        special_tokens=special,
    )


def byte_level_tokenizer(
    *,
    model_max_length: int,
    bos_token: str | None,
    eos_token: str | None,
    pad_token: str,
    unk_token: str | None = None,
    extra_special_tokens: Sequence[str] = (),
    padding_side: str = "right",
) -> PreTrainedTokenizerFast:
    """Build a dependency-free byte-level tokenizer (every byte is a token) with the given specials.

    Why: tiny test pipelines must be constructible offline and deterministically; a merge-free
    byte-level BPE needs no vocabulary file yet tokenizes any string. Ids 0..255 are the byte
    symbols; the special tokens follow in the order bos, eos, pad, unk, extras (duplicates
    dropped), so the text encoder's ``vocab_size`` must be at least ``len(tokenizer)``.

    ``model_max_length`` is required: without it transformers uses a huge sentinel value and
    pipelines that truncate to ``tokenizer.model_max_length`` (CLIP) overflow their position
    embeddings. ``bos_token``/``eos_token`` (either may be ``None``) are added around every
    encoded sequence, like CLIP (``<|startoftext|> ... <|endoftext|>``) or T5 (``... </s>``).
    """
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = _special_tokens(bos_token, eos_token, pad_token, unk_token, extra_special_tokens)
    vocab = {sym: i for i, sym in enumerate(byte_symbols)}
    vocab.update({tok: len(byte_symbols) + i for i, tok in enumerate(specials)})

    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk_token))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = _post_processor(bos_token, eos_token, vocab)
    backend.add_special_tokens(specials)

    named = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token, "unk_token": unk_token}
    named_values = {v for v in named.values() if v is not None}
    extras = [tok for tok in dict.fromkeys(extra_special_tokens) if tok not in named_values]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=model_max_length,
        padding_side=padding_side,
        additional_special_tokens=extras,
        **{k: v for k, v in named.items() if v is not None},
    )
