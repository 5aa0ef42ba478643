#!/usr/bin/env python3
"""Oracle fixtures for the model tests, produced by an independent implementation (Hugging Face
transformers on PyTorch). Run by hand on a machine with torch + transformers; never needed by the
engine or CI. Writes, for each tiny random model, tests/data/models/<name>/:

  config.json, model.safetensors   the checkpoint exactly as save_pretrained writes it
  fixture.safetensors              inputs and expected outputs, computed in float32 (in float64
                                   HF's eager mask turns fully padded query rows into NaN that
                                   then reaches real rows through 0 * NaN):
    input_ids (B,T) i32, attention_mask (B,T) i32 (row 1 left-padded), position_ids (B,T) i32
    (count from each row's first real token, as HF generate does),
    causal LM:  logits (B,T,V) f32; loss () f32 = mean next-token cross-entropy over valid
                targets (labels = input_ids shifted, -100 where either position is padding);
                grad.<hf name> f32 = d loss / d parameter for every parameter
    reward:     values (B,T) f32 = score head applied at every position, reward (B) f32 = HF's
                pooled score (last non-pad token); loss = sum(reward * [1, -0.5]),
                grad.<hf name> for every parameter

Usage: python3 tools/oracle/make_model_fixtures.py [--out tests/data/models]
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen2ForSequenceClassification)

B, T, PAD_LEFT = 2, 9, 3  # row 1 has PAD_LEFT padding positions on the left
VOCAB = 61


def configs():
    common_llama = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                        rms_norm_eps=1e-5, rope_theta=10000.0, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2)
    return {
        "gpt2": (GPT2LMHeadModel, GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                             bos_token_id=1, eos_token_id=2,
                                             n_inner=None, activation_function="gelu_new",
                                             layer_norm_epsilon=1e-5, pad_token_id=0,
                                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
        "llama": (LlamaForCausalLM, LlamaConfig(tie_word_embeddings=False, **common_llama)),
        "qwen2": (Qwen2ForCausalLM, Qwen2Config(tie_word_embeddings=True, **common_llama)),
        "qwen2_reward": (Qwen2ForSequenceClassification,
                         Qwen2Config(tie_word_embeddings=True, num_labels=1, **common_llama)),
    }


def randomize(model, seed):
    """Every parameter random (biases and norm weights too), so no term hides behind zeros or ones."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def inputs(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, :PAD_LEFT] = 0
    ids[1, :PAD_LEFT] = 0  # pad id
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "models"))
    args = ap.parse_args()
    torch.manual_seed(0)
    for i, (name, (cls, cfg)) in enumerate(configs().items()):
        cfg._attn_implementation = "eager"
        model = cls(cfg)
        randomize(model, 100 + i)
        out = os.path.join(args.out, name)
        os.makedirs(out, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        ids, mask, pos = inputs(200 + i)
        m64 = model  # float32, see the docstring
        m64.zero_grad()
        tensors = {"input_ids": ids.int(), "attention_mask": mask.int(), "position_ids": pos.int()}
        if name.endswith("reward"):
            hidden = m64.model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
            values = m64.score(hidden)[..., 0]
            reward = m64(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, 0]
            loss = (reward * torch.tensor([1.0, -0.5])).sum()
            tensors.update(values=values.detach().float().contiguous(), reward=reward.detach().float().contiguous())
        else:
            logits = m64(input_ids=ids, attention_mask=mask, position_ids=pos).logits
            labels = ids[:, 1:].clone()
            valid = (mask[:, 1:] == 1) & (mask[:, :-1] == 1)
            labels[~valid] = -100
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels.reshape(-1),
                                                     ignore_index=-100)
            tensors["logits"] = logits.detach().float().contiguous()
        loss.backward()
        tensors["loss"] = loss.detach().float().reshape(1)
        seen = set()
        for pname, p in m64.named_parameters():
            if p.data_ptr() in seen:  # tied weights appear once, under their first name
                continue
            seen.add(p.data_ptr())
            tensors["grad." + pname] = p.grad.detach().float().contiguous()
        save_file(tensors, os.path.join(out, "fixture.safetensors"))
        with open(os.path.join(out, "fixture.json"), "w") as f:
            json.dump({"model_class": cls.__name__, "transformers": __import__("transformers").__version__,
                       "torch": torch.__version__, "loss": loss.item()}, f, indent=1)
        print(f"{name}: loss {float(loss):.6f}, {len(tensors)} tensors -> {out}")


if __name__ == "__main__":
    main()
