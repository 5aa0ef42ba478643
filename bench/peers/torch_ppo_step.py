#!/usr/bin/env python3
"""One PPO-RLHF step in plain PyTorch + Hugging Face transformers: the side-by-side peer of `ppo bench`.

It does the work of the engine's PPO step the way TRL's and OpenRLHF's PPO trainers do it, from the
same run config (the engine's JSON format, `PpoConfig`; unknown keys are errors):

  generate    HF `generate` (KV cache, sampling at temperature / top-k / top-p) on left-padded
              prompts, then a teacher-forced policy forward over prompt+response for the rollout
              ("old") log-probs: full-vocabulary log_softmax(logits / temperature) of the sampled
              tokens (the sub-timings are reported as generate/sampling and generate/old_logp)
  reference   the same log-probs from the frozen reference (a copy of the policy at init, as TRL)
  reward      the reward model's score head at the last valid response token (the EOS when there is one)
  value       the value model's per-token values, V_t = head(hidden at position P-1+t) (TRL, OpenRLHF)
  advantages  per-token KL (k1|k2|k3), -kl_coef*KL + clipped score on the last valid token, optional
              reward whitening, GAE(gamma, lam), advantage whitening over valid tokens
  train       ppo_epochs x num_minibatches AdamW steps (separate optimizers for policy and value,
              learning_rate / value_learning_rate), each accumulated over micro-batches of
              micro_batch_size; loss = pg_loss + value_loss_coef * vf_loss (+ entropy / KL-loss terms
              when configured), per micro-batch masked token means divided by the accumulation
              steps (TRL); grad-norm clipping per model (max_grad_norm)

Per-token math (the engine's kernels/backend.h and ppo/advantages.h; all means over valid tokens):
  r = ref_logp - logp;  k1 = -r;  k2 = r^2/2;  k3 = exp(r) - 1 - r
  s = clip(score', -reward_clip, reward_clip) - missing_eos_penalty*[no EOS], score' = (score - mean)/std
      over every score so far when normalize_scores (running moments in float64), else score
  reward_t = -kl_coef*kl_t*[kl_in_reward] + s*[t == last valid token]
  delta_t = reward_t + gamma*m_{t+1}*V_{t+1} - V_t;  A_t = delta_t + gamma*lam*m_{t+1}*A_{t+1};  returns = A + V
  A <- (A - mean) / sqrt(var + 1e-8)   (population variance over valid tokens)
  ratio = exp(logp - old_logp);  pg = max(-A*ratio, -A*clip(ratio, 1-clip_eps, 1+clip_eps))
          (dual clip c > 1: pg = min(pg, -c*A) where A < 0)
  vc = old_v + clip(v - old_v, -clip_value, clip_value);  vf = 0.5*max((v - R)^2, (vc - R)^2)

Models: the run config's `policy` / `reward` objects (arch "gpt2"|"llama", n_layer, n_head,
n_kv_head, d_model, d_ff, vocab_size, max_seq_len, rope_theta, norm_eps, tied_embeddings,
qkv_bias) map to GPT2Config / LlamaConfig / Qwen2Config (llama with qkv_bias). Policy and reference
are *ForCausalLM, reward and value *ForSequenceClassification (num_labels=1); SDPA attention,
dropout off. Random weights from the seed (nothing is downloaded), or `--weights DIR`.
The EOS id is eos_token_id, else the model config's eos_token_id, else vocab_size - 1; padding uses
the EOS id (masks, not pad ids, decide what is valid). Position ids count from each sequence's
first real token.

Trace (`--trace OUT.safetensors`), B = rollout_batch_size, P = prompt_length, R = response_length,
M = minibatch size (B / num_minibatches). Ids and masks int32, the rest float32:
  prompt_ids      (B,P)  left-padded prompt tokens (padding holds the EOS id)
  prompt_mask     (B,P)  1 on real prompt tokens
  response_ids    (B,R)  sampled (or forced) tokens, padded with the EOS id after the end
  response_mask   (B,R)  1 on real response tokens, the EOS included (a prefix of each row)
  old_logp        (B,R)  rollout policy log-probs of response_ids at the temperature (0 on padding)
  ref_logp        (B,R)  reference log-probs, same rule
  values          (B,R)  rollout values (0 on padding)
  scores          (B)    raw reward-model scores (before clipping and the missing-EOS penalty)
  kl              (B,R)  per-token KL estimate (0 on padding)
  rewards         (B,R)  shaped per-token rewards (after optional reward whitening)
  advantages      (B,R)  GAE advantages after optional whitening (0 on padding)
  returns         (B,R)  advantages before whitening + values (0 on padding)
  epoch0/minibatch_indices (M)  rollout rows of the first minibatch of the first epoch, in order
  epoch0/new_logp (M,R)  the policy's log-probs in that minibatch's training forward (rows as above)
  epoch0/ratio    (M,R)  exp(new_logp - old_logp) (0 on padding)
  epoch0/policy_loss (1) clipped surrogate, mean over the minibatch's valid tokens (before the update)
  epoch0/value_loss  (1) 0.5*max(...) clipped value loss, mean over the same tokens (no value_loss_coef)
With policy == reference (init), kl == 0 and epoch0/ratio == 1 up to rounding.

Files: `--weights DIR` reads DIR/{policy,reference,reward,value}.safetensors in Hugging Face naming
(the state_dict keys of the models above; a tied lm_head.weight may be absent; a missing reference
is the policy, a missing value is built as value_init says). `--save-weights DIR` writes the
models in the same form. `--force-responses FILE` (.safetensors or .json with prompt_ids,
prompt_mask, response_ids and optionally response_mask, shapes as in the trace) replaces sampling.

Example:
  python bench/peers/torch_ppo_step.py --config bench/configs/qwen2.5-0.5b-shape.json \
      --device cuda --steps 3 --warmup 1 --fixed-response-length --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import re
import resource
import sys
import time

import torch
import torch.nn.functional as F

try:
    import transformers
    from transformers import (GenerationConfig, GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel,
                              LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, Qwen2Config,
                              Qwen2ForCausalLM, Qwen2ForSequenceClassification)
    import safetensors.torch
except ImportError as e:  # the peer only; the engine never needs these
    sys.exit(f"torch_ppo_step.py needs transformers and safetensors: {e}")

PHASES = ["generate", "reference", "reward", "value", "advantages", "train"]
MODEL_NAMES = ["policy", "reference", "reward", "value"]
WHITEN_EPS = 1e-8

# ---- run config: PpoConfig's keys and defaults (ppo/config.h), in declaration order --------------------
CONFIG_DEFAULTS = {
    "seed": 1, "device": "auto", "output_dir": "runs/ppo", "total_steps": 200, "log_every": 1,
    "save_every": 0, "resume": "", "rollout_batch_size": 64, "prompt_length": 64, "response_length": 53, "min_new_tokens": 0,
    "temperature": 0.7, "top_k": 0, "top_p": 1.0, "eos_token_id": -1, "stop_token_ids": [],
    "ppo_epochs": 4, "num_minibatches": 1, "micro_batch_size": 8, "learning_rate": 3e-6,
    "value_learning_rate": 9e-6, "lr_warmup_steps": 0, "lr_schedule": "linear", "adam_beta1": 0.9,
    "adam_beta2": 0.999, "adam_eps": 1e-8, "weight_decay": 0.0, "max_grad_norm": 1.0,
    "clip_eps": 0.2, "dual_clip": 0.0, "clip_value": 0.2, "value_loss_coef": 0.1, "entropy_coef": 0.0,
    "gamma": 1.0, "lam": 0.95,
    "kl_coef": 0.05, "kl_estimator": "k1", "kl_in_reward": True, "adaptive_kl": False, "kl_target": 6.0,
    "kl_horizon": 10000.0, "whiten_advantages": True, "whiten_rewards": False, "normalize_scores": False,
    "reward_clip": 10.0,
    "missing_eos_penalty": 0.0,
    "value_model": "separate", "value_init": "reward", "policy": {}, "reward": {},
    "policy_checkpoint": "", "reward_checkpoint": "", "prompts": "", "tokenizer": "",
}
# Engine keys the peer accepts but cannot honour (it runs random weights and prompts, one EOS): an
# error when set. Run management (save_every, resume) is accepted and ignored.
PEER_UNSUPPORTED = ["stop_token_ids", "policy_checkpoint", "reward_checkpoint", "prompts", "tokenizer"]
CONFIG_ENUMS = {"device": ["auto", "cpu", "cuda"], "lr_schedule": ["constant", "linear", "cosine"],
                "kl_estimator": ["k1", "k2", "k3"], "value_model": ["separate", "policy_head"],
                "value_init": ["reward", "policy"]}
MODEL_KEYS = {"arch", "n_layer", "n_head", "n_kv_head", "d_model", "d_ff", "vocab_size", "max_seq_len",
              "rope_theta", "norm_eps", "tied_embeddings", "qkv_bias", "eos_token_id"}


def fail(msg: str):
    sys.exit(f"torch_ppo_step.py: {msg}")


def check_value(where: str, default, value):
    """The engine's typing rules: bool is not a number, integers stay integers, enums by name."""
    key = where.split("'")[1]
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    else:
        ok = isinstance(value, str) and (key not in CONFIG_ENUMS or value in CONFIG_ENUMS[key])
    if not ok:
        fail(f"{where}: bad value {json.dumps(value)}")
    return float(value) if isinstance(default, float) else value


def load_config(path: str | None, overrides: list[str]) -> dict:
    cfg = copy.deepcopy(CONFIG_DEFAULTS)
    if path:
        with open(path) as f:
            text = f.read()
        text = re.sub(r"^\s*//.*$", "", text, flags=re.M)  # the engine ignores comments
        for key, value in json.loads(text).items():
            if key not in cfg:
                fail(f"{path}: unknown key '{key}'")
            cfg[key] = check_value(f"{path}: key '{key}'", CONFIG_DEFAULTS[key], value)
    for assignment in overrides:  # --set key=value, policy.key=value
        key, eq, text = assignment.partition("=")
        if not eq:
            fail(f"--set {assignment}: expected key=value")
        model, dot, member = key.partition(".")
        if dot and model in ("policy", "reward"):
            try:
                cfg[model][member] = json.loads(text)
            except json.JSONDecodeError:
                cfg[model][member] = text
            continue
        if key not in cfg:
            fail(f"--set {assignment}: unknown key '{key}'")
        default = CONFIG_DEFAULTS[key]
        if isinstance(default, bool):
            value = {"true": True, "1": True, "false": False, "0": False}.get(text)
        elif isinstance(default, (int, float, dict, list)):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = None
        else:
            value = text
        cfg[key] = check_value(f"--set '{key}'", default, value)
    if not cfg["reward"]:
        cfg["reward"] = dict(cfg["policy"])
    B, mb = cfg["rollout_batch_size"], cfg["num_minibatches"]
    if B % mb or (B // mb) % cfg["micro_batch_size"]:
        fail("num_minibatches must divide rollout_batch_size and micro_batch_size the minibatch size")
    if cfg["value_model"] != "separate":
        fail("value_model 'policy_head' is not implemented by the peer (TRL and OpenRLHF use a separate model)")
    if not 0 <= cfg["min_new_tokens"] <= cfg["response_length"]:
        fail("min_new_tokens must lie in [0, response_length]")
    for key in PEER_UNSUPPORTED:
        if cfg[key] != CONFIG_DEFAULTS[key]:
            fail(f"'{key}' is not implemented by the peer (random weights and prompts, one EOS; see --weights)")
    return cfg


# ---- models ---------------------------------------------------------------------------------------------

def hf_config(m: dict, name: str):
    """The engine's model JSON -> a transformers config (GPT-2, Llama, or Qwen2 when qkv_bias)."""
    for key in ("arch", "n_layer", "n_head", "d_model", "vocab_size", "max_seq_len"):
        if key not in m:
            fail(f"{name} model config: missing '{key}'")
    unknown = set(m) - MODEL_KEYS
    if unknown:
        print(f"warning: {name} model config: keys the peer ignores: {sorted(unknown)}", file=sys.stderr)
    C, V = m["d_model"], m["vocab_size"]
    eos = m.get("eos_token_id", V - 1)
    if m["arch"] == "gpt2":
        if m.get("n_kv_head", m["n_head"]) != m["n_head"]:
            fail(f"{name}: gpt2 has no grouped-query attention (n_kv_head must equal n_head)")
        return GPT2Config(vocab_size=V, n_positions=m["max_seq_len"], n_embd=C, n_layer=m["n_layer"],
                          n_head=m["n_head"], n_inner=m.get("d_ff", 4 * C), activation_function="gelu_new",
                          layer_norm_epsilon=m.get("norm_eps", 1e-5), resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, summary_first_dropout=0.0,
                          tie_word_embeddings=m.get("tied_embeddings", True), bos_token_id=eos,
                          eos_token_id=eos, pad_token_id=eos)
    if m["arch"] == "llama":
        cls = Qwen2Config if m.get("qkv_bias", False) else LlamaConfig
        return cls(vocab_size=V, hidden_size=C, intermediate_size=m.get("d_ff", 4 * C),
                   num_hidden_layers=m["n_layer"], num_attention_heads=m["n_head"],
                   num_key_value_heads=m.get("n_kv_head", m["n_head"]), max_position_embeddings=m["max_seq_len"],
                   rope_theta=float(m.get("rope_theta", 10000.0)), rms_norm_eps=m.get("norm_eps", 1e-5),
                   tie_word_embeddings=m.get("tied_embeddings", True), attention_dropout=0.0,
                   bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    fail(f"{name}: arch must be 'gpt2' or 'llama', got {m['arch']!r}")


def model_classes(config):
    if isinstance(config, GPT2Config):
        return GPT2LMHeadModel, GPT2ForSequenceClassification
    if isinstance(config, Qwen2Config):
        return Qwen2ForCausalLM, Qwen2ForSequenceClassification
    return LlamaForCausalLM, LlamaForSequenceClassification


def build(config, kind: str, seed: int):
    """Random init from the seed: kind 'lm' -> *ForCausalLM, 'score' -> *ForSequenceClassification."""
    config = copy.deepcopy(config)
    config.num_labels = 1
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    lm_cls, score_cls = model_classes(config)
    return (lm_cls if kind == "lm" else score_cls)(config)


def backbone(model):
    return getattr(model, model.base_model_prefix)


def state_dict_for_file(model) -> dict:
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


def load_weights(model, path: str):
    sd = safetensors.torch.load_file(path)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.config.tie_word_embeddings)]
    if missing or unexpected:
        fail(f"{path}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}")


def matmul_params(model) -> int:
    """Parameters that take part in a matmul per token (the embedding lookups do not; a tied LM head does)."""
    n = sum(p.numel() for p in model.parameters())
    for name, p in model.named_parameters():
        if name.endswith(("wte.weight", "wpe.weight", "embed_tokens.weight")):
            n -= p.numel()
    if hasattr(model, "lm_head") and model.config.tie_word_embeddings:
        n += model.lm_head.weight.numel()
    return n


def build_models(cfg: dict, args) -> dict:
    seed = cfg["seed"]
    pol_cfg, rew_cfg = hf_config(cfg["policy"], "policy"), hf_config(cfg["reward"], "reward")
    models = {"policy": build(pol_cfg, "lm", seed)}
    models["reward"] = build(rew_cfg, "score", seed + 1)
    w = args.weights
    if w:
        load_weights(models["policy"], os.path.join(w, "policy.safetensors"))
        load_weights(models["reward"], os.path.join(w, "reward.safetensors"))
    models["reference"] = copy.deepcopy(models["policy"])  # TRL: the reference starts as a copy
    if w and os.path.exists(os.path.join(w, "reference.safetensors")):
        load_weights(models["reference"], os.path.join(w, "reference.safetensors"))
    if cfg["value_init"] == "reward":
        models["value"] = copy.deepcopy(models["reward"])  # TRL: the value model starts as the reward model
    else:  # the policy's trunk with a fresh scalar head
        models["value"] = build(pol_cfg, "score", seed + 2)
        trunk = {k: v for k, v in models["policy"].state_dict().items() if not k.startswith("lm_head.")}
        models["value"].load_state_dict(trunk, strict=False)
    if w and os.path.exists(os.path.join(w, "value.safetensors")):
        load_weights(models["value"], os.path.join(w, "value.safetensors"))
    for name, model in models.items():
        model.to(device=args.device, dtype=args.param_dtype)
        model.train(name in ("policy", "value"))  # dropout is 0 everywhere; train() only marks intent
        model.requires_grad_(name in ("policy", "value"))
    return models


# ---- forward passes (teacher-forced over prompt + response) ---------------------------------------------

def lm_logp(model, input_ids, attention_mask, position_ids, responses, inv_temperature: float, with_entropy: bool):
    """Full-vocabulary log-probs (B,R) of `responses` under logits * inv_temperature, and the entropy (B,R)
    when asked. Logits at positions P-1 .. T-2 predict the response tokens."""
    R = responses.shape[1]
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False, logits_to_keep=R + 1).logits[:, :-1]
    logp_all = F.log_softmax(logits.float() * inv_temperature, dim=-1)
    logp = logp_all.gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
    return logp, entropy


def token_values(model, input_ids, attention_mask, position_ids, R: int):
    """Values (B,R): the scalar head on the hidden states at positions P-1 .. T-2."""
    hidden = backbone(model)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False).last_hidden_state
    return model.score(hidden[:, -R - 1:-1]).squeeze(-1).float()


def sequence_scores(model, input_ids, attention_mask, position_ids, last_index):
    """Scores (B): the scalar head on the hidden state of each row's last valid token."""
    hidden = backbone(model)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False).last_hidden_state
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_index]
    return model.score(last).squeeze(-1).float()


# ---- PPO math -------------------------------------------------------------------------------------------

def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def masked_whiten(x, mask, keep_mean: bool = False):
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)  # population variance, as the engine
    out = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if keep_mean:
        out = out + mean
    return out * mask


def kl_estimate(logp, ref_logp, mask, estimator: str):
    r = ref_logp - logp
    kl = {"k1": -r, "k2": 0.5 * r * r, "k3": torch.expm1(r) - r}[estimator]
    return kl * mask


def gae(rewards, values, mask, gamma: float, lam: float):
    B, R = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(B, device=rewards.device)
    next_adv = torch.zeros(B, device=rewards.device)
    for t in reversed(range(R)):
        m_next = mask[:, t + 1] if t + 1 < R else torch.zeros(B, device=rewards.device)
        delta = rewards[:, t] + gamma * m_next * next_value - values[:, t]
        advantages[:, t] = delta + gamma * lam * m_next * next_adv
        next_value, next_adv = values[:, t], advantages[:, t]
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss_tokens(logp, old_logp, advantages, clip_eps: float, dual_clip: float):
    ratio = torch.exp(logp - old_logp)
    loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps))
    if dual_clip > 1:
        loss = torch.where(advantages < 0, torch.min(loss, -dual_clip * advantages), loss)
    return loss, ratio


def value_loss_tokens(v, old_v, returns, clip_value: float):
    v_clipped = old_v + (v - old_v).clamp(-clip_value, clip_value)
    return 0.5 * torch.max((v - returns) ** 2, (v_clipped - returns) ** 2), v_clipped


def lr_factor(cfg: dict, step: int) -> float:
    warm = cfg["lr_warmup_steps"]
    if step < warm:
        return (step + 1) / (warm + 1)
    total = cfg["total_steps"] * cfg["ppo_epochs"] * cfg["num_minibatches"]
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return {"constant": 1.0, "linear": 1.0 - progress,
            "cosine": 0.5 * (1.0 + math.cos(math.pi * progress))}[cfg["lr_schedule"]]


# ---- timing ----------------------------------------------------------------------------------------------

class PhaseTimer:
    """Wall time per phase with device synchronization, and peak memory per phase (CUDA: max allocated
    since the phase began; CPU: the process's resident set at the phase's end)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}
        self.memory: dict[str, int | None] = {}
        self.open: list[str] = []  # phases under way, outermost first

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, name: str):
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        self.open.append(name)
        yield
        self.open.pop()
        self.sync()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            try:
                with open("/proc/self/statm") as f:
                    peak = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except OSError:
                peak = None
        # an inner phase resets the counter: its peak also counts for the phases around it
        for phase in [name] + self.open:
            self.memory[phase] = None if peak is None else max(self.memory.get(phase) or 0, peak)


# ---- the step --------------------------------------------------------------------------------------------

class Peer:
    def __init__(self, cfg: dict, args):
        self.cfg, self.args = cfg, args
        self.device = args.device
        self.models = build_models(cfg, args)
        pol = cfg["policy"]
        self.eos = cfg["eos_token_id"] if cfg["eos_token_id"] >= 0 else pol.get("eos_token_id", pol["vocab_size"] - 1)
        self.kl_coef = cfg["kl_coef"]
        self.score_moments = (0.0, 0.0, 0.0)  # count, mean, m2 of every score so far (normalize_scores)
        self.optimizer_step = 0
        fused = self.device.type == "cuda"
        betas = (cfg["adam_beta1"], cfg["adam_beta2"])
        self.optimizers = {
            name: torch.optim.AdamW(self.models[name].parameters(), lr=lr, betas=betas, eps=cfg["adam_eps"],
                                    weight_decay=cfg["weight_decay"], fused=fused)
            for name, lr in (("policy", cfg["learning_rate"]), ("value", cfg["value_learning_rate"]))}
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=args.autocast)
        self.prompt_gen = torch.Generator().manual_seed(cfg["seed"] + 3)
        self.shuffle_gen = torch.Generator().manual_seed(cfg["seed"] + 4)
        torch.manual_seed(cfg["seed"] + 5)  # sampling in generate
        fwd = torch.compile if args.compile else (lambda f, **kw: f)
        self.lm_logp = fwd(lm_logp, dynamic=False)
        self.token_values = fwd(token_values, dynamic=False)
        self.sequence_scores = fwd(sequence_scores, dynamic=False)
        self.forced = load_forced(args.force_responses, cfg, self.device) if args.force_responses else None

    # -- rollout inputs
    def prompts(self):
        B, P, V = self.cfg["rollout_batch_size"], self.cfg["prompt_length"], self.cfg["policy"]["vocab_size"]
        ids = torch.randint(0, V - 1, (B, P), generator=self.prompt_gen)
        ids = torch.where(ids >= self.eos, ids + 1, ids)  # never the EOS id inside a prompt
        lengths = torch.randint(self.args.min_prompt_length, P + 1, (B,), generator=self.prompt_gen)
        mask = (torch.arange(P) >= (P - lengths).unsqueeze(1)).long()
        ids = torch.where(mask.bool(), ids, torch.full_like(ids, self.eos))
        return ids.to(self.device), mask.to(self.device)

    def generate(self, prompt_ids, prompt_mask):
        cfg, R = self.cfg, self.cfg["response_length"]
        min_new = R if self.args.fixed_response_length else cfg["min_new_tokens"]
        gen = GenerationConfig(max_new_tokens=R, min_new_tokens=min_new, do_sample=True,
                               temperature=cfg["temperature"], top_k=cfg["top_k"], top_p=cfg["top_p"],
                               eos_token_id=self.eos, pad_token_id=self.eos, use_cache=True,
                               cache_implementation="static" if self.args.compile else None)
        with torch.no_grad(), self.autocast:
            out = self.models["policy"].generate(input_ids=prompt_ids, attention_mask=prompt_mask,
                                                 generation_config=gen)
        responses = out[:, prompt_ids.shape[1]:]
        return F.pad(responses, (0, R - responses.shape[1]), value=self.eos)  # rows that all stopped early

    def response_mask(self, responses):
        if self.args.fixed_response_length:
            return torch.ones_like(responses), torch.zeros(responses.shape[0], dtype=torch.bool,
                                                           device=responses.device)
        is_eos = responses == self.eos
        ended = is_eos.any(1)
        first = torch.where(ended, is_eos.long().argmax(1), torch.full_like(ended, responses.shape[1] - 1, dtype=torch.long))
        mask = (torch.arange(responses.shape[1], device=responses.device) <= first.unsqueeze(1)).long()
        return mask, ended

    def chunks(self, n: int):
        """Row slices for the rollout's forward-only passes."""
        size = self.args.forward_batch_size or self.cfg["micro_batch_size"]
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]

    @torch.no_grad()
    def forward_logp(self, name, seq):
        inv_t = 1.0 / self.cfg["temperature"]
        out = []
        for s in self.chunks(seq["ids"].shape[0]):
            with self.autocast:
                out.append(self.lm_logp(self.models[name], seq["ids"][s], seq["attn"][s], seq["pos"][s],
                                        seq["responses"][s], inv_t, False)[0])
        return torch.cat(out) * seq["mask"]

    def step(self, timer: PhaseTimer, trace: dict | None):
        cfg, R = self.cfg, self.cfg["response_length"]
        B = cfg["rollout_batch_size"]
        P = cfg["prompt_length"]
        with timer("generate"):
            with timer("generate/sampling"):
                if self.forced:
                    prompt_ids, prompt_mask, responses = (self.forced[k] for k in ("prompt_ids", "prompt_mask", "response_ids"))
                else:
                    prompt_ids, prompt_mask = self.prompts()
                    responses = self.generate(prompt_ids, prompt_mask)
                if self.forced and "response_mask" in self.forced:
                    mask = self.forced["response_mask"]
                    ended = (responses == self.eos).any(1) & (not self.args.fixed_response_length)
                else:
                    mask, ended = self.response_mask(responses)
            attn = torch.cat([prompt_mask, torch.ones_like(responses)], 1)
            seq = {"ids": torch.cat([prompt_ids, responses], 1), "attn": attn,
                   "pos": (attn.cumsum(1) - 1).clamp(min=0), "responses": responses, "mask": mask.float()}
            with timer("generate/old_logp"):
                old_logp = self.forward_logp("policy", seq)
        with timer("reference"):
            ref_logp = self.forward_logp("reference", seq)
        with timer("reward"), torch.no_grad():
            last = P + mask.sum(1) - 1
            scores = torch.cat([self._scores(seq, s, last) for s in self.chunks(B)])
        with timer("value"), torch.no_grad():
            values = torch.cat([self._values(seq, s) for s in self.chunks(B)]) * seq["mask"]
        with timer("advantages"):
            m = seq["mask"]
            kl = kl_estimate(old_logp, ref_logp, m, cfg["kl_estimator"])
            s = scores
            if cfg["normalize_scores"]:  # Chan et al.'s merge of this batch into the running moments
                n, mean, m2 = self.score_moments
                x = scores.double()
                n_b, mean_b = x.numel(), x.mean().item()
                m2_b, delta, total = ((x - mean_b) ** 2).sum().item(), mean_b - mean, n + x.numel()
                self.score_moments = (total, mean + delta * n_b / total, m2 + m2_b + delta * delta * n * n_b / total)
                s = ((x - self.score_moments[1]) / (self.score_moments[2] / total + 1e-8) ** 0.5).to(scores.dtype)
            s = s.clamp(-cfg["reward_clip"], cfg["reward_clip"]) if cfg["reward_clip"] > 0 else s
            s = s - cfg["missing_eos_penalty"] * (~ended).float()
            rewards = (-self.kl_coef * kl) if cfg["kl_in_reward"] else torch.zeros_like(kl)
            rewards = rewards.scatter_add(1, (mask.sum(1) - 1).unsqueeze(1), s.unsqueeze(1))
            if cfg["whiten_rewards"]:
                rewards = masked_whiten(rewards, m, keep_mean=True)
            advantages, returns = gae(rewards, values, m, cfg["gamma"], cfg["lam"])
            if cfg["whiten_advantages"]:
                advantages = masked_whiten(advantages, m)
            timer.sync()
        stats = {"kl": kl.sum(1).mean().item(), "score": scores.mean().item(),
                 "response_length": m.sum(1).mean().item(), "num_eos": int(ended.sum().item())}
        if trace is not None:
            trace.update(prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=responses, response_mask=mask,
                         old_logp=old_logp, ref_logp=ref_logp, values=values, scores=scores, kl=kl,
                         rewards=rewards, advantages=advantages, returns=returns)
        with timer("train"):
            stats.update(self.train(seq, old_logp, ref_logp, values, advantages, returns, trace))
        if cfg["adaptive_kl"]:  # Ziegler et al. 2019 (ppo/kl_controller.h)
            error = min(max(stats["kl"] / cfg["kl_target"] - 1, -0.2), 0.2)
            self.kl_coef *= 1 + error * B / cfg["kl_horizon"]
        stats["valid_response_tokens"] = int(mask.sum().item())
        return stats

    def _scores(self, seq, s, last):
        with self.autocast:
            return self.sequence_scores(self.models["reward"], seq["ids"][s], seq["attn"][s], seq["pos"][s], last[s])

    def _values(self, seq, s):
        with self.autocast:
            return self.token_values(self.models["value"], seq["ids"][s], seq["attn"][s], seq["pos"][s],
                                     self.cfg["response_length"])

    def train(self, seq, old_logp, ref_logp, old_values, advantages, returns, trace):
        cfg = self.cfg
        B, mbs = cfg["rollout_batch_size"], cfg["micro_batch_size"]
        M = B // cfg["num_minibatches"]
        accum = M // mbs
        inv_t = 1.0 / cfg["temperature"]
        entropy_on = cfg["entropy_coef"] > 0
        policy, value = self.models["policy"], self.models["value"]
        sums = {k: torch.zeros((), device=self.device) for k in ("pg", "vf", "clipfrac", "approxkl", "ratio", "vf_clipfrac", "n")}
        for epoch in range(cfg["ppo_epochs"]):
            order = (torch.arange(B) if self.args.no_shuffle else torch.randperm(B, generator=self.shuffle_gen))
            order = order.to(self.device)
            for start in range(0, B, M):
                mb_rows = order[start:start + M]
                first = trace is not None and epoch == 0 and start == 0
                traced = {"new_logp": [], "ratio": [], "pg": 0.0, "vf": 0.0, "n": 0.0} if first else None
                factor = lr_factor(cfg, self.optimizer_step)
                for name, opt in self.optimizers.items():
                    base = cfg["learning_rate"] if name == "policy" else cfg["value_learning_rate"]
                    for group in opt.param_groups:
                        group["lr"] = base * factor
                for micro in range(accum):
                    rows = mb_rows[micro * mbs:(micro + 1) * mbs]
                    ids, attn, pos, resp = (seq[k][rows] for k in ("ids", "attn", "pos", "responses"))
                    m = seq["mask"][rows]
                    with self.autocast:
                        logp, entropy = self.lm_logp(policy, ids, attn, pos, resp, inv_t, entropy_on)
                        v = self.token_values(value, ids, attn, pos, cfg["response_length"])
                    pg_tok, ratio = policy_loss_tokens(logp, old_logp[rows], advantages[rows], cfg["clip_eps"], cfg["dual_clip"])
                    vf_tok, v_clipped = value_loss_tokens(v, old_values[rows], returns[rows], cfg["clip_value"])
                    loss = masked_mean(pg_tok, m) + cfg["value_loss_coef"] * masked_mean(vf_tok, m)
                    if entropy_on:
                        loss = loss - cfg["entropy_coef"] * masked_mean(entropy, m)
                    if not cfg["kl_in_reward"]:  # beta*KL as a loss term (OpenRLHF's use_kl_loss)
                        loss = loss + self.kl_coef * masked_mean(kl_estimate(logp, ref_logp[rows], m, cfg["kl_estimator"]), m)
                    (loss / accum).backward()
                    with torch.no_grad():  # statistics stay on the device: no sync inside the loop
                        n_tok = m.sum()
                        sums["pg"] += (pg_tok * m).sum()
                        sums["vf"] += (vf_tok * m).sum()
                        sums["clipfrac"] += (((ratio - 1).abs() > cfg["clip_eps"]).float() * m).sum()
                        sums["vf_clipfrac"] += (((v - returns[rows]) ** 2 < (v_clipped - returns[rows]) ** 2).float() * m).sum()
                        sums["approxkl"] += (0.5 * (logp - old_logp[rows]) ** 2 * m).sum()
                        sums["ratio"] += (ratio * m).sum()
                        sums["n"] += n_tok
                        if first:
                            traced["new_logp"].append(logp * m)
                            traced["ratio"].append(ratio * m)
                            traced["pg"] += (pg_tok * m).sum()
                            traced["vf"] += (vf_tok * m).sum()
                            traced["n"] += n_tok
                for name, opt in self.optimizers.items():
                    if cfg["max_grad_norm"] > 0:
                        torch.nn.utils.clip_grad_norm_(self.models[name].parameters(), cfg["max_grad_norm"])
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                self.optimizer_step += 1
                if first:
                    trace["epoch0/minibatch_indices"] = mb_rows
                    trace["epoch0/new_logp"] = torch.cat(traced["new_logp"])
                    trace["epoch0/ratio"] = torch.cat(traced["ratio"])
                    trace["epoch0/policy_loss"] = (traced["pg"] / traced["n"]).reshape(1)
                    trace["epoch0/value_loss"] = (traced["vf"] / traced["n"]).reshape(1)
        n = sums.pop("n")
        return {f"train/{k}": (v / n).item() for k, v in sums.items()}


def load_forced(path: str, cfg: dict, device: torch.device) -> dict:
    if path.endswith(".json"):
        with open(path) as f:
            raw = {k: torch.tensor(v) for k, v in json.load(f).items()}
    else:
        raw = safetensors.torch.load_file(path)
    B, P, R = cfg["rollout_batch_size"], cfg["prompt_length"], cfg["response_length"]
    shapes = {"prompt_ids": (B, P), "prompt_mask": (B, P), "response_ids": (B, R), "response_mask": (B, R)}
    out = {}
    for key, shape in shapes.items():
        if key not in raw:
            if key == "response_mask":
                continue
            fail(f"{path}: missing tensor '{key}'")
        if tuple(raw[key].shape) != shape:
            fail(f"{path}: '{key}' has shape {tuple(raw[key].shape)}, the config asks for {shape}")
        out[key] = raw[key].long().to(device)
    return out


# ---- reporting -------------------------------------------------------------------------------------------

def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if "H100" in name or "H200" in name:
            return 989.4e12  # dense bf16 tensor-core peak, SXM
    return None


def phase_flops(cfg: dict, n: dict, head: int) -> dict:
    """Model FLOPs per phase: 2 N per token for forward-only passes, 6 N for training (N = matmul
    parameters; attention scores are not counted). The trunk runs on all P+R positions, the LM head
    (`head` = V x C parameters) only where logits are used: R sampled tokens, R+1 scored positions."""
    B, P, R = cfg["rollout_batch_size"], cfg["prompt_length"], cfg["response_length"]
    tokens, sampled, scored = B * (P + R), B * R, B * (R + 1)
    trunk_policy, trunk_reference = n["policy"] - head, n["reference"] - head
    return {"generate": 2 * (2 * trunk_policy * tokens + head * (sampled + scored)),  # sampling + old_logp
            "reference": 2 * (trunk_reference * tokens + head * scored), "reward": 2 * n["reward"] * tokens,
            "value": 2 * n["value"] * tokens, "advantages": 0,
            "train": 6 * (trunk_policy * tokens + head * scored + n["value"] * tokens) * cfg["ppo_epochs"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="run config JSON (the engine's PpoConfig format)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="weights; default bf16 on cuda, fp32 on cpu")
    ap.add_argument("--autocast", action="store_true", help="fp32 weights under bf16 autocast")
    ap.add_argument("--compile", action="store_true", help="torch.compile the forwards; static KV cache in generate")
    ap.add_argument("--steps", type=int, default=3, help="timed PPO steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed PPO steps first")
    ap.add_argument("--fixed-response-length", action="store_true",
                    help="EOS off: every response has response_length tokens (min_new_tokens = max_new_tokens)")
    ap.add_argument("--min-prompt-length", type=int, default=None,
                    help="random prompt lengths in [this, prompt_length], left-padded (default: all full)")
    ap.add_argument("--forward-batch-size", type=int, default=None,
                    help="rows per forward-only pass in the rollout (reference, reward, value, old_logp); "
                         "default: micro_batch_size")
    ap.add_argument("--no-shuffle", action="store_true", help="minibatches in rollout order")
    ap.add_argument("--weights", metavar="DIR", help="load DIR/{policy,reference,reward,value}.safetensors")
    ap.add_argument("--save-weights", metavar="DIR", help="write the initial weights there in HF naming")
    ap.add_argument("--force-responses", metavar="FILE", help="prompts and responses to use instead of sampling")
    ap.add_argument("--trace", metavar="OUT", help="write the first step's tensors (safetensors)")
    ap.add_argument("--json", metavar="OUT", help="write the timings")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)")
    args = ap.parse_args()

    cfg = load_config(args.config, args.set)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and cfg["device"] != "cpu" else "cpu"
    args.device = torch.device(args.device)
    if args.dtype is None:
        args.dtype = "bf16" if args.device.type == "cuda" and not args.autocast else "fp32"
    if args.autocast and args.dtype != "fp32":
        fail("--autocast keeps fp32 weights: use it with --dtype fp32 (the default with --autocast)")
    args.param_dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    P = cfg["prompt_length"]
    args.min_prompt_length = P if args.min_prompt_length is None else args.min_prompt_length
    if not 1 <= args.min_prompt_length <= P:
        fail("--min-prompt-length must lie in [1, prompt_length]")
    for name in ("policy", "reward"):
        if cfg[name]["max_seq_len"] < P + cfg["response_length"]:
            fail(f"{name}.max_seq_len < prompt_length + response_length")

    transformers.logging.set_verbosity_error()
    peer = Peer(cfg, args)
    if args.save_weights:
        os.makedirs(args.save_weights, exist_ok=True)
        for name, model in peer.models.items():
            safetensors.torch.save_file(state_dict_for_file(model), os.path.join(args.save_weights, f"{name}.safetensors"))

    n_params = {k: sum(p.numel() for p in m.parameters()) for k, m in peer.models.items()}
    n_matmul = {k: matmul_params(m) for k, m in peer.models.items()}
    policy_config = peer.models["policy"].config
    flops = phase_flops(cfg, n_matmul, policy_config.vocab_size * policy_config.hidden_size)
    peak = peak_flops(args.device, args.peak_tflops)
    device_name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu"
    print(f"peer: torch {torch.__version__}, transformers {transformers.__version__}, {device_name}, "
          f"{args.dtype}{' +autocast' if args.autocast else ''}{' +compile' if args.compile else ''}; "
          f"params " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in n_params.items()))

    runs, trace = [], {} if args.trace else None
    for i in range(args.warmup + args.steps):
        timer = PhaseTimer(args.device)
        start = time.perf_counter()
        stats = peer.step(timer, trace if i == 0 else None)
        timer.sync()
        timer.seconds["total"] = time.perf_counter() - start
        timed = i >= args.warmup
        print(f"step {i}{'' if timed else ' (warmup)'}: {timer.seconds['total'] * 1e3:.1f} ms  "
              + "  ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in stats.items()))
        if timed:
            runs.append((timer, stats))
        if i == 0 and args.trace:
            safetensors.torch.save_file({k: (v.float() if v.is_floating_point() else v.int()).contiguous().cpu()
                                         for k, v in trace.items()}, args.trace)
            print(f"trace: {len(trace)} tensors -> {args.trace}")
    if not runs:
        return

    names = PHASES + ["total"]
    sub = ["generate/sampling", "generate/old_logp"]
    mean = {k: sum(t.seconds[k] for t, _ in runs) / len(runs) for k in names + sub}
    memory = {k: max((t.memory.get(k) or 0) for t, _ in runs) or None for k in PHASES + sub}
    flops["total"] = sum(flops[k] for k in PHASES)
    valid_tokens = sum(s["valid_response_tokens"] for _, s in runs) / len(runs)
    report = {"peer": "torch", "torch": torch.__version__, "transformers": transformers.__version__,
              "device": device_name, "dtype": args.dtype, "autocast": args.autocast, "compile": args.compile,
              "fixed_response_length": args.fixed_response_length, "steps": len(runs), "warmup": args.warmup,
              "config": cfg, "params": n_params, "matmul_params": n_matmul,
              "memory_kind": "cuda_max_allocated" if args.device.type == "cuda" else "cpu_rss",
              "phases": {}, "subphases": {},
              "response_tokens": valid_tokens,
              "response_tokens_per_s": valid_tokens / mean["total"],
              "generate_tokens_per_s": valid_tokens / mean["generate/sampling"],
              "metrics": runs[-1][1]}
    print(f"\n{'phase':<20}{'ms':>10}{'%':>7}{'peak MiB':>11}{'TFLOP/s':>10}{'MFU':>8}")
    for k in names + sub:
        s = mean[k]
        row = {"seconds": s, "seconds_all": [t.seconds[k] for t, _ in runs], "peak_memory_bytes": memory.get(k)}
        if k in flops:
            row["flops"] = flops[k]
            row["tflops_per_s"] = flops[k] / s / 1e12 if s > 0 else None
            row["mfu"] = flops[k] / s / peak if peak and s > 0 else None
        (report["phases"] if k in names else report["subphases"])[k] = row
        mem = memory.get(k) if k != "total" else max((v or 0) for v in memory.values())
        mfu = "" if row.get("mfu") is None else f"{100 * row['mfu']:.1f}%"
        print(f"{k:<20}{s * 1e3:>10.1f}{100 * s / mean['total']:>7.1f}"
              f"{(mem or 0) / 2**20:>11.0f}{row.get('tflops_per_s') or 0:>10.2f}{mfu:>8}")
    print(f"response tokens/s (valid tokens / step time): {report['response_tokens_per_s']:.1f}; "
          f"sampling tokens/s: {report['generate_tokens_per_s']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
