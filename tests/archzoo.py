"""Tiny randomly initialised models of every decoder family the toolkit claims to read.

Each entry builds its architecture from the ``transformers`` config class (two layers,
width 32 or 64, grouped-query attention and sliding windows where the family has them,
windows shorter than the test prompts so that they matter) and a tokenizer that follows
the family's conventions, because that is where real families differ for our engine:

- ``bytelevel``: GPT-2 style byte-level BPE, leading space inside the token, no BOS
  (GPT-2, GPT-NeoX, GPT-J, Qwen2/3, OLMo 2 ...);
- ``bytelevel_bos``: the same with ``</s>`` prepended by the tokenizer (OPT);
- ``metaspace_bos``: SentencePiece style (``▁`` for a space, a dummy prefix at the start
  of the text) with ``<s>`` prepended (Llama, Mistral, Phi-3);
- ``gemma``: SentencePiece style without the dummy prefix, ``<bos>`` prepended (Gemma).

Saved as ordinary Hugging Face directories and loaded through the project's own
``load_model`` (``TransformerBridge.boot_transformers``), like any user's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from tests.tinymodels import CORPUS

SPECIAL = {"bytelevel": ["<|endoftext|>"], "bytelevel_bos": ["<pad>", "</s>", "<unk>"],
           "metaspace_bos": ["<unk>", "<s>", "</s>"], "gemma": ["<pad>", "<eos>", "<bos>", "<unk>"]}


def make_tokenizer(kind: str, vocab_size: int = 320):
    """A BPE tokenizer trained on the test corpus, with ``kind``'s conventions."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = SPECIAL[kind]
    if kind.startswith("bytelevel"):
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tk = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=False))
        tk.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="▁", prepend_scheme="first" if kind == "metaspace_bos" else "never")
        tk.decoder = decoders.Metaspace(
            replacement="▁", prepend_scheme="first" if kind == "metaspace_bos" else "never")
        alphabet = sorted(set("".join(CORPUS)) | {"▁", "\n"})
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=alphabet)
    tk.train_from_iterator(CORPUS, trainer)
    if kind == "bytelevel":
        return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>",
                                       eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    bos = {"bytelevel_bos": "</s>", "metaspace_bos": "<s>", "gemma": "<bos>"}[kind]
    tk.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, tk.token_to_id(bos))])
    eos = {"bytelevel_bos": "</s>", "metaspace_bos": "</s>", "gemma": "<eos>"}[kind]
    pad = {"bytelevel_bos": "<pad>", "metaspace_bos": None, "gemma": "<pad>"}[kind]
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos,
                                   unk_token="<unk>", pad_token=pad)


def adds_bos(tok: Any) -> bool:
    """Does the tokenizer put BOS in front of a text by default?"""
    ids = tok("Answer", add_special_tokens=True)["input_ids"]
    return bool(ids) and tok.bos_token_id is not None and ids[0] == tok.bos_token_id


@dataclass(frozen=True)
class Arch:
    name: str            # as in the README table
    tokenizer: str       # a key of SPECIAL
    build: Callable[[int, Any], Any]   # (vocab size, tokenizer) -> model
    note: str = ""       # what is special about it (GQA, sliding window ...)


def _ids(tok) -> dict[str, int]:
    return {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id}


def _llama_like(cls_name: str, cfg_name: str, **extra):
    def build(v, tok):
        import transformers as T

        cfg = getattr(T, cfg_name)(vocab_size=v, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=256,
                                   tie_word_embeddings=False, **_ids(tok), **extra)
        return getattr(T, cls_name)(cfg)
    return build


def _gpt2(v, tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=v, n_embd=32, n_layer=2, n_head=4,
                                      n_positions=256, **_ids(tok)))


def _neox(v, tok):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=256, rotary_pct=0.25,
        tie_word_embeddings=False, **_ids(tok)))


def _opt(v, tok):
    from transformers import OPTConfig, OPTForCausalLM

    return OPTForCausalLM(OPTConfig(vocab_size=v, hidden_size=32, num_hidden_layers=2,
                                    ffn_dim=128, num_attention_heads=4, word_embed_proj_dim=32,
                                    max_position_embeddings=256, **_ids(tok)))


def _gptj(v, tok):
    from transformers import GPTJConfig, GPTJForCausalLM

    return GPTJForCausalLM(GPTJConfig(vocab_size=v, n_embd=32, n_layer=2, n_head=4,
                                      rotary_dim=4, n_positions=256, **_ids(tok)))


def _gemma2(v, tok):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    return Gemma2ForCausalLM(Gemma2Config(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=256, sliding_window=8, **_ids(tok)))


def _gemma3(v, tok):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    return Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=256, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], **_ids(tok)))


def _gpt_neo(v, tok):
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    return GPTNeoForCausalLM(GPTNeoConfig(
        vocab_size=v, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=128,
        max_position_embeddings=256, window_size=8,
        attention_types=[[["global", "local"], 1]], **_ids(tok)))


def _phi(v, tok):
    from transformers import PhiConfig, PhiForCausalLM

    return PhiForCausalLM(PhiConfig(
        vocab_size=v, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=256, partial_rotary_factor=0.5,
        **_ids(tok)))


def _stablelm(v, tok):
    from transformers import StableLmConfig, StableLmForCausalLM

    return StableLmForCausalLM(StableLmConfig(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        partial_rotary_factor=0.25, **_ids(tok)))


ARCHS: dict[str, Arch] = {a.name: a for a in [
    Arch("gpt2", "bytelevel", _gpt2, "learned positions, LayerNorm, fused QKV (Conv1D)"),
    Arch("gpt_neox", "bytelevel", _neox, "partial rotary, parallel attention + MLP"),
    Arch("opt", "bytelevel_bos", _opt, "learned positions offset by 2, BOS </s>"),
    Arch("gptj", "bytelevel", _gptj, "rotary on 4 dims, parallel block"),
    Arch("llama", "metaspace_bos", _llama_like("LlamaForCausalLM", "LlamaConfig"),
         "RMSNorm, rotary, grouped-query attention (4 heads, 2 KV)"),
    Arch("mistral", "metaspace_bos",
         _llama_like("MistralForCausalLM", "MistralConfig", sliding_window=8),
         "grouped-query attention, sliding window 8"),
    Arch("qwen2", "bytelevel", _llama_like("Qwen2ForCausalLM", "Qwen2Config"),
         "QKV biases, grouped-query attention"),
    Arch("qwen3", "bytelevel", _llama_like("Qwen3ForCausalLM", "Qwen3Config", head_dim=16),
         "QK RMSNorm, grouped-query attention"),
    Arch("gemma2", "gemma", _gemma2,
         "(1 + w) RMSNorm, embeddings x sqrt(d), soft-capped logits, local/global layers "
         "(sliding window 8)"),
    Arch("gemma3", "gemma", _gemma3,
         "QK norm, local/global layers (sliding window 8), dual rotary bases"),
    Arch("phi3", "metaspace_bos", _llama_like("Phi3ForCausalLM", "Phi3Config"),
         "fused qkv and gate_up projections"),
    Arch("olmo2", "bytelevel", _llama_like("Olmo2ForCausalLM", "Olmo2Config"),
         "post-norm blocks, QK RMSNorm"),
    Arch("gemma", "gemma", _llama_like("GemmaForCausalLM", "GemmaConfig", head_dim=16),
         "Gemma 1: (1 + w) RMSNorm, embeddings x sqrt(d)"),
    Arch("gpt_neo", "bytelevel", _gpt_neo, "global/local layers (sliding window 8)"),
    Arch("phi", "bytelevel", _phi, "Phi-1/2: parallel block, partial rotary, biases"),
    Arch("stablelm", "bytelevel", _stablelm, "LayerNorm, partial rotary, GQA"),
]}


def build(name: str, out_dir: Path, seed: int = 0) -> Path:
    """Save architecture ``name`` with its tokenizer to ``out_dir`` (a HF directory)."""
    arch = ARCHS[name]
    tok = make_tokenizer(arch.tokenizer)
    torch.manual_seed(seed)
    model = arch.build(len(tok), tok)
    # random init gives near-uniform outputs; sharpen them so that class choices differ
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() >= 2:
                p.mul_(3.0)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
