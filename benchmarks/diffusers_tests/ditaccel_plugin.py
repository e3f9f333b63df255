"""pytest plugin for running diffusers' own pipeline test classes offline, on wrapped pipelines.

- The tiny hub checkpoints the tests load (``hf-internal-testing/tiny-random-t5`` config and
  tokenizer, ``tiny-random-clip`` tokenizer) are replaced by offline equivalents: byte-level
  tokenizers and a T5 config of the same shape.
- With ``DITACCEL_METHODS`` set (``none``, or a method spec), every test class's
  ``pipeline_class`` builds an ``AcceleratedPipeline`` with those methods instead of the plain
  pipeline: ``pipeline_class(**components)`` returns the wrapper, everything else about the class
  is diffusers'.

Used by ``benchmarks/diffusers_pipeline_tests.py``.
"""

from __future__ import annotations

import os

from transformers import AutoConfig, AutoTokenizer, CLIPTokenizer, T5Config

from ditaccel.tokenizers import byte_level_tokenizer

T5_NAME, CLIP_NAME = "hf-internal-testing/tiny-random-t5", "hf-internal-testing/tiny-random-clip"


def _t5_tokenizer():
    return byte_level_tokenizer(model_max_length=512, bos_token=None, eos_token="</s>", pad_token="<pad>",
                                unk_token="<unk>")  # fmt: skip


def _clip_tokenizer():
    return byte_level_tokenizer(model_max_length=77, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                pad_token="<|endoftext|>", unk_token="<|endoftext|>")  # fmt: skip


def _t5_config():
    """The shape of hf-internal-testing/tiny-random-t5 (d_model 32, the joint dim of the tests)."""
    tokenizer = _t5_tokenizer()
    return T5Config(vocab_size=len(tokenizer) + 8, d_model=32, d_kv=8, d_ff=37, num_layers=5, num_heads=4,
                    relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)  # fmt: skip


def _offline(original, replacements):
    def load(name, *args, **kwargs):
        if name in replacements:
            return replacements[name]()
        return original(name, *args, **kwargs)

    return load


def pytest_configure(config):
    AutoConfig.from_pretrained = _offline(AutoConfig.from_pretrained, {T5_NAME: _t5_config})
    AutoTokenizer.from_pretrained = _offline(AutoTokenizer.from_pretrained, {T5_NAME: _t5_tokenizer})
    CLIPTokenizer.from_pretrained = _offline(CLIPTokenizer.from_pretrained, {CLIP_NAME: _clip_tokenizer})


def _wrapping(base: type, spec: str) -> type:
    from ditaccel import AcceleratedPipeline

    class Wrapped(base):
        def __new__(cls, *args, **kwargs):
            return AcceleratedPipeline.from_pipe(base(*args, **kwargs), [] if spec == "none" else spec)

    Wrapped.__name__, Wrapped.__qualname__, Wrapped.__module__ = (
        base.__name__,
        base.__qualname__,
        base.__module__,
    )
    return Wrapped


def pytest_collection_modifyitems(session, config, items):
    spec = os.environ.get("DITACCEL_METHODS")
    if not spec:
        return
    done = set()
    for item in items:
        cls = getattr(item, "cls", None)
        base = getattr(cls, "pipeline_class", None)
        if cls is None or base is None or cls in done:
            continue
        cls.pipeline_class = _wrapping(base, spec)
        done.add(cls)
