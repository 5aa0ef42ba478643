#!/usr/bin/env python3
"""Same work, proven: the engine and the PyTorch peer on one set of weights and one set of tokens.

  python3 bench/same_work_check.py --ppo build/ppo [--config bench/configs/tiny.json] [--work DIR]
                                   [--set k=v ...]

1. `ppo bench --device cpu --steps 1 --warmup 0 --fixed-response-length --trace W/engine
   --save-weights W/weights`: one engine step (fp32) with its trace (the first step's tensors,
   ppo/trace.h) and its four initial models as HF checkpoints.
2. `torch_ppo_step.py --device cpu --dtype fp32 --weights W/peer_weights --force-responses
   W/engine/trace.safetensors --trace W/peer.safetensors --fixed-response-length`: the peer scores the
   engine's prompts and responses with the engine's weights (W/peer_weights/<model>.safetensors link
   to the engine's exports).
3. Every rollout tensor is compared over valid response tokens: |engine - peer| <= atol + rtol |peer|.

Tolerances (float32 on both sides, different summation orders; the tiny config's logits are O(1)):
  old_logp, ref_logp   atol 2e-5, rtol 1e-5  (log_softmax over V, a few ulps of the logits' range)
  values, scores       atol 2e-5, rtol 1e-4  (one dot product of a C-vector with the last hidden state)
  kl, rewards          atol 2e-5, rtol 1e-4  (differences of the log-probs above; the score term)
  returns              atol 1e-4, rtol 1e-4  (a reverse sum over R of the rewards and values)
  advantages           atol 1e-3, rtol 1e-3  (whitened: the returns' error divided by their std)
With policy == reference (the first step), kl is 0 on both sides: the KL term of the rewards is not
exercised here, only its inputs old_logp and ref_logp. When both sides' first minibatch holds the
same rows (always with num_minibatches = 1), its training log-probs and loss means are compared.
Exit 0 with one "SKIP ..." line when python3 cannot import torch and transformers.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

try:
    import torch
    import transformers  # noqa: F401  (the peer needs it)
    import safetensors.torch
except ImportError as e:
    print(f"SKIP same_work_check: python3 cannot import torch/transformers/safetensors ({e})")
    sys.exit(0)

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["policy", "reference", "reward", "value"]
# name -> (atol, rtol, per token?)
TOLERANCES = {
    "old_logp": (2e-5, 1e-5, True), "ref_logp": (2e-5, 1e-5, True),
    "values": (2e-5, 1e-4, True), "scores": (2e-5, 1e-4, False),
    "kl": (2e-5, 1e-4, True), "rewards": (2e-5, 1e-4, True),
    "returns": (1e-4, 1e-4, True), "advantages": (1e-3, 1e-3, True),
}


def run(cmd, log):
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        with open(log) as f:
            sys.stdout.write(f.read()[-3000:])
        sys.exit(f"FAIL: {' '.join(cmd)} exited {r.returncode}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ppo", required=True, help="the engine binary")
    ap.add_argument("--config", default=os.path.join(HERE, "configs", "tiny.json"))
    ap.add_argument("--work", default=None, help="keep the runs here (default: a temporary directory)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="same_work_")
    os.makedirs(work, exist_ok=True)
    sets = [x for s in a.set for x in ("--set", s)]

    run([a.ppo, "bench", "--config", a.config, "--device", "cpu", "--steps", "1", "--warmup", "0",
         "--fixed-response-length", "--trace", f"{work}/engine", "--save-weights", f"{work}/weights", *sets],
        f"{work}/engine.log")
    peer_weights = f"{work}/peer_weights"
    os.makedirs(peer_weights, exist_ok=True)
    for m in MODELS:
        src, dst = f"{work}/weights/{m}/model.safetensors", f"{peer_weights}/{m}.safetensors"
        if os.path.exists(src) and not os.path.exists(dst):
            os.symlink(os.path.abspath(src), dst)
    run([sys.executable, os.path.join(HERE, "peers", "torch_ppo_step.py"), "--config", a.config, "--device", "cpu",
         "--dtype", "fp32", "--steps", "1", "--warmup", "0", "--fixed-response-length", "--no-shuffle",
         "--weights", peer_weights, "--force-responses", f"{work}/engine/trace.safetensors",
         "--trace", f"{work}/peer.safetensors", *sets], f"{work}/peer.log")

    eng = safetensors.torch.load_file(f"{work}/engine/trace.safetensors")
    peer = safetensors.torch.load_file(f"{work}/peer.safetensors")
    for k in ("prompt_ids", "prompt_mask", "response_ids", "response_mask"):
        if not torch.equal(eng[k].int(), peer[k].int()):
            sys.exit(f"FAIL: {k} differs: the peer did not take the engine's tokens")
    mask = eng["response_mask"].bool()
    ok, report = True, []
    for name, (atol, rtol, per_token) in TOLERANCES.items():
        e, p = eng[name].double(), peer[name].double()
        if e.shape != p.shape:
            sys.exit(f"FAIL: {name}: engine shape {tuple(e.shape)}, peer {tuple(p.shape)}")
        err = (e - p).abs()
        bound = atol + rtol * p.abs()
        if per_token:
            err, bound, e_v, p_v = err[mask], bound[mask], e[mask], p[mask]
        else:
            e_v, p_v = e.flatten(), p.flatten()
        bad = (err > bound).nonzero()
        line = (f"{name:<11} max |diff| {err.max().item():.3g}  (atol {atol:g}, rtol {rtol:g}; "
                f"max |peer| {p_v.abs().max().item():.3g}, n {err.numel()})")
        if bad.numel():
            ok = False
            i = bad[0].item()
            line += f"  BAD at valid index {i}: engine {e_v[i].item():.7g} peer {p_v[i].item():.7g}"
        report.append(line)
    # The first minibatch: the same rows on both sides (as a set: with one minibatch the whole batch, in
    # each side's order) -> its loss means before the update and each row's training log-probs (before
    # any update, so they equal old_logp: atol 2e-5) must agree.
    e_idx, p_idx = eng.get("epoch0/minibatch_indices"), peer.get("epoch0/minibatch_indices")
    if e_idx is not None and p_idx is not None and sorted(e_idx.tolist()) == sorted(p_idx.tolist()):
        p_row = {r: i for i, r in enumerate(p_idx.tolist())}
        order = torch.tensor([p_row[r] for r in e_idx.tolist()])
        m = mask[e_idx.long()]
        d = (eng["epoch0/new_logp"].double() - peer["epoch0/new_logp"].double()[order]).abs()[m].max().item()
        report.append(f"epoch0/new_logp max |diff| {d:.3g} (atol 2e-05; rows matched by rollout index)")
        ok = ok and d <= 2e-5
        for k in ("epoch0/policy_loss", "epoch0/value_loss"):
            d = (eng[k].double() - peer[k].double()).abs().item()
            report.append(f"{k} |diff| {d:.3g} (engine {eng[k].item():.7g}, peer {peer[k].item():.7g}, atol 1e-5)")
            ok = ok and d <= 1e-5
    else:
        report.append("epoch0: not compared (the sides drew different rows for the first minibatch)")
    print("\n".join(report))
    print(("PASS" if ok else "FAIL") + f": engine vs peer on the same weights and tokens (work dir {work})")
    with open(f"{work}/same_work.json", "w") as f:
        json.dump({"ok": ok, "lines": report}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
