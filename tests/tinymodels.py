"""Tiny randomly initialised models with a locally trained BPE tokenizer, for tests.

Byte-level BPE (as GPT-2/Pythia) so that leading spaces and merges across the
prompt/class boundary matter, as they do for real models.
"""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "Write a quote that ends in the word heavy: Absence makes the heart grow fonder.",
    "The quick brown fox jumps over the lazy dog. Answer: Yes No yes no A B",
    "Question: Is the conclusion correct? Answer: No Yes. If John has a pet then John has a dog.",
    "Capitalize each sentence. Input: well, there you are. Output: Well, there you are.",
    "Actions speak louder than words. Accidents will happen in the best families.",
] * 20


def make_tokenizer(vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def make_word_tokenizer(words):
    """A word-level tokenizer (WhitespaceSplit, as the organisms'): a class that is only
    whitespace encodes to zero tokens, an unseen word to the unknown token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = ["<|endoftext|>", "<|unk|>"] + sorted(set(words) - {"<|endoftext|>", "<|unk|>"})
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<|unk|>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="\x00##", cleanup=False)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="<|unk|>")


def make_model(kind: str, out_dir: Path, d_model: int = 32, n_layers: int = 2,
               n_ctx: int = 128, seed: int = 0, tokenizer=None) -> Path:
    """Save a random GPT-NeoX or GPT-2 model + tokenizer as a HF directory."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    tok = tokenizer or make_tokenizer()
    torch.manual_seed(seed)
    if kind == "neox":
        cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=d_model, num_hidden_layers=n_layers,
                            num_attention_heads=4, intermediate_size=4 * d_model,
                            max_position_embeddings=n_ctx, rotary_pct=0.25,
                            tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
        model = GPTNeoXForCausalLM(cfg)
    elif kind == "gpt2":
        cfg = GPT2Config(vocab_size=len(tok), n_embd=d_model, n_layer=n_layers, n_head=4,
                         n_positions=n_ctx, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(kind)
    # random init gives near-uniform outputs; sharpen them so class choices differ
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
