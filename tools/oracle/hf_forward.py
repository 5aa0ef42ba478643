#!/usr/bin/env python3
"""Runs a Hugging Face checkpoint directory (e.g. one `ppo export` wrote) in transformers on the
inputs of a fixture file and writes its output logits, so a test can check that transformers loads
the directory as the same model. Needs torch + transformers (never a CI dependency: the test that
calls this skips when they are missing).

Usage: python3 tools/oracle/hf_forward.py MODEL_DIR FIXTURE.safetensors OUT.safetensors [MODEL_DIR ...]
  (any number of triples, so that one python start serves several models)
  inputs:  input_ids, attention_mask, position_ids (B,T) of the fixture
  output:  logits f32: (B,T,V) for a causal LM, (B,1) for a sequence classifier (the pooled score)
"""
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification


def run(model_dir, fixture, out):
    cfg = AutoConfig.from_pretrained(model_dir)
    cls = AutoModelForSequenceClassification if cfg.architectures[0].endswith("ForSequenceClassification") \
        else AutoModelForCausalLM
    model = cls.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32).eval()
    f = load_file(fixture)
    with torch.no_grad():
        logits = model(input_ids=f["input_ids"].long(), attention_mask=f["attention_mask"].long(),
                       position_ids=f["position_ids"].long()).logits
    save_file({"logits": logits.float().contiguous()}, out)


def main():
    args = sys.argv[1:]
    assert args and len(args) % 3 == 0, __doc__
    for i in range(0, len(args), 3):
        run(*args[i:i + 3])


if __name__ == "__main__":
    main()
