// kernel_bench: validates each CUDA op against the CPU reference, then times it beside a peer
// measured in the same run (README.md beside this file has the formulas):
//   matmul forward/backward (cuBLASLt, the engine's path)  vs raw cublasGemmEx bf16, f32 compute
//   attention forward, forward+backward                    vs PyTorch SDPA flash (--sdpa-json)
//   norms, GELU, SwiGLU, AdamW (memory-bound)              vs device-to-device copy bandwidth
//   fused vocabulary pass forward/backward                 vs raw cublasGemmEx of the same GEMMs
//   variants under bench/kernels/<op>/                     vs the engine's kernel
// Prints one table last; writes it as JSON to --json (default $OUT/kernel_bench.json when OUT is set).
// Exit status 1 when any output fails validation (or a case throws); perf targets are reported only.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include "bench/kernels/harness.h"

namespace ppo::kbench {
namespace {

constexpr double kTargetMatmul = 0.9, kTargetAttention = 0.8, kTargetMemory = 0.7;
// Validation bounds on relative L2 vs the CPU f32 op: bf16 outputs round at 2^-9 relative; products
// over long sums of bf16 operands (attention, vocabulary pass backward) gather a little more.
constexpr double kLimitBf16 = 1e-2, kLimitBf16Long = 2e-2, kLimitF32 = 1e-3;

std::string dims(std::initializer_list<std::pair<const char*, int64_t>> named) {
  std::string s;
  for (const auto& [name, value] : named) s += (s.empty() ? "" : " ") + std::string(name) + "=" + std::to_string(value);
  return s;
}

double max_of(std::initializer_list<double> errs) {
  double m = 0;
  for (double e : errs) m = std::isnan(e) || std::isnan(m) ? NAN : std::max(m, e);
  return std::isnan(m) ? INFINITY : m;
}

// ---- matmul -------------------------------------------------------------------------------------

// Raw cuBLAS peers (column-major views of the row-major products, as in kernels/cuda/matmul.cu).
void gemm(Harness& h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const void* a,
          int64_t lda, const void* b, int64_t ldb, float beta, void* d, cudaDataType_t d_type, int64_t ldd,
          float alpha = 1.0f) {
  PPO_CHECK_CUBLAS(cublasGemmEx(h.cublas(), ta, tb, int(m), int(n), int(k), &alpha, a, CUDA_R_16BF, int(lda), b,
                                CUDA_R_16BF, int(ldb), &beta, d, d_type, int(ldd), CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
}

void bench_matmul(Harness& h, const char* model, int64_t N, int64_t C, int64_t OC) {
  if (!h.wants("matmul")) return;
  Harness::Scope scope(h);
  Backend &cpu = h.cpu(), &gpu = h.gpu();
  const int64_t vrows = N;  // validated at the timed shape: cuBLASLt may pick another algorithm for fewer rows
  Pair inp = h.input(Role::Act, h.random(size_t(N * C)), {N, C}, "inp", vrows);
  Pair w = h.input(Role::Act, h.random(size_t(OC * C), 1.0f / std::sqrt(float(C))), {OC, C}, "weight");
  Pair out = h.output(Role::Act, {N, OC}, "out", vrows);
  Pair dout = h.input(Role::Act, h.random(size_t(N * OC)), {N, OC}, "dout", vrows);
  Pair dinp = h.output(Role::Act, {N, C}, "dinp", vrows);
  const std::vector<float> dw0 = h.random(size_t(OC * C), 1.0f, Role::Grad);
  Pair dw = h.input(Role::Grad, dw0, {OC, C}, "dweight");

  cpu.matmul_forward(out.cpu, inp.cpu, w.cpu, {});
  gpu.matmul_forward(out.gpu_head(), inp.gpu_head(), w.gpu, {});
  const double err_fwd = rel_l2(gpu.to_host(out.gpu_head()), cpu.to_host(out.cpu));
  cpu.matmul_backward(dinp.cpu, dw.cpu, {}, dout.cpu, inp.cpu, w.cpu);
  gpu.matmul_backward(dinp.gpu_head(), dw.gpu, {}, dout.gpu_head(), inp.gpu_head(), w.gpu);
  const double err_bwd = max_of({rel_l2(gpu.to_host(dinp.gpu_head()), cpu.to_host(dinp.cpu)),
                                 rel_l2(gpu.to_host(dw.gpu), cpu.to_host(dw.cpu), &dw0)});

  const double t_fwd = h.time_ms([&] { gpu.matmul_forward(out.gpu, inp.gpu, w.gpu, {}); });
  const double p_fwd = h.time_ms([&] {
    gemm(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, w.gpu.data, C, inp.gpu.data, C, 0.0f, out.gpu.data, CUDA_R_16BF, OC);
  });
  const double t_bwd = h.time_ms([&] { gpu.matmul_backward(dinp.gpu, dw.gpu, {}, dout.gpu, inp.gpu, w.gpu); });
  const double p_bwd = h.time_ms([&] {
    gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, w.gpu.data, C, dout.gpu.data, OC, 0.0f, dinp.gpu.data, CUDA_R_16BF, C);
    gemm(h, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, inp.gpu.data, C, dout.gpu.data, OC, 1.0f, dw.gpu.data, CUDA_R_32F, C);
  });

  const double flops = 2.0 * double(N) * double(C) * double(OC);
  const std::string shape = std::string(model) + " " + dims({{"N", N}, {"C", C}, {"OC", OC}});
  for (int pass = 0; pass < 2; ++pass) {
    Result r;
    r.op = pass == 0 ? "matmul fwd" : "matmul bwd (dinp+dweight)";
    r.shape = shape;
    r.unit = "TFLOP/s";
    const double f = pass == 0 ? flops : 2 * flops;
    r.ms = pass == 0 ? t_fwd : t_bwd;
    r.peer_ms = pass == 0 ? p_fwd : p_bwd;
    r.rate = f / (r.ms * 1e-3) / 1e12;
    r.peer = "cublasGemmEx";
    r.peer_rate = f / (r.peer_ms * 1e-3) / 1e12;
    r.ratio = r.rate / r.peer_rate;
    r.target = kTargetMatmul;
    r.err = pass == 0 ? err_fwd : err_bwd;
    r.err_limit = kLimitBf16;
    r.formula = pass == 0 ? "2 N C OC" : "4 N C OC";
    r.note = "no bias";
    h.add(r);
  }
}

// ---- attention ----------------------------------------------------------------------------------

struct SdpaPeer {
  double fwd_ms = NAN, fwd_bwd_ms = NAN;
  std::string how;
};

std::optional<SdpaPeer> sdpa_peer(const Harness& h, int64_t B, int64_t T, int NH, int NKV, int HS) {
  if (h.options().sdpa_json.empty()) return std::nullopt;
  std::ifstream f(h.options().sdpa_json);
  if (!f.good()) return std::nullopt;
  const nlohmann::json doc = nlohmann::json::parse(f, nullptr, false);
  if (doc.is_discarded() || !doc.contains("results")) return std::nullopt;
  for (const auto& r : doc["results"]) {
    if (r.value("B", 0) == B && r.value("T", 0) == T && r.value("NH", 0) == NH && r.value("NKV", 0) == NKV &&
        r.value("HS", 0) == HS && r.contains("fwd_ms") && r["fwd_ms"].is_number()) {
      SdpaPeer p;
      p.fwd_ms = r["fwd_ms"].get<double>();
      p.fwd_bwd_ms = r.value("fwd_bwd_ms", NAN);
      const std::string gqa = r.value("gqa", std::string("mha"));
      p.how = "SDPA " + doc.value("backend", std::string("flash")) +
              (gqa == "enable_gqa" ? " gqa" : gqa == "repeat_interleave" ? "+repeat" : "");
      return p;
    }
  }
  return std::nullopt;
}

// rel_l2 of log-sum-exps where a query with no visible key has -inf on both sides (counted as equal).
double lse_rel_l2(std::vector<float> got, std::vector<float> want) {
  for (size_t i = 0; i < got.size() && i < want.size(); ++i)
    if (got[i] == -INFINITY && want[i] == -INFINITY) got[i] = want[i] = 0.0f;
  return rel_l2(got, want);
}

void bench_attention(Harness& h, int64_t B, int64_t T, int NH, int NKV, int HS) {
  if (!h.wants("attention")) return;
  Harness::Scope scope(h);
  Backend &cpu = h.cpu(), &gpu = h.gpu();
  const int64_t W = int64_t(NH + 2 * NKV) * HS, OW = int64_t(NH) * HS;
  const int64_t vb = std::min<int64_t>(B, 2);  // validation batch rows (independent per row)
  Pair qkv = h.input(Role::Act, h.random(size_t(B * T * W), 1.5f), {B, T, W}, "qkv", vb);
  Pair mask = h.input_ids(std::vector<int32_t>(size_t(B * T), 1), {B, T}, "mask", vb);
  Pair out = h.output(Role::Act, {B, T, OW}, "out", vb);
  Pair lse = h.output(Role::Grad, {B, NH, T}, "lse", vb);
  Pair dout = h.input(Role::Act, h.random(size_t(B * T * OW)), {B, T, OW}, "dout", vb);
  Pair dqkv = h.output(Role::Act, {B, T, W}, "dqkv", vb);

  // Validation on the leading vb rows, unpadded and left-padded (row 0 by 5 positions, row 1 by T/3:
  // the first queries see no key, the first keys are seen by no query).
  std::vector<int32_t> padded(size_t(vb * T), 1);
  for (int64_t b = 0; b < vb; ++b)
    for (int64_t t = 0; t < std::min<int64_t>(T, b == 0 ? 5 : T / 3); ++t) padded[size_t(b * T + t)] = 0;
  Pair mask_p = h.input_ids(padded, {vb, T}, "padded mask");
  double err_fwd = 0, err_bwd = 0;
  for (const Pair* m : {&mask, &mask_p}) {
    cpu.attention_forward(out.cpu, lse.cpu, qkv.cpu, m->cpu, NH, NKV, HS);
    gpu.attention_forward(out.gpu_head(), lse.gpu_head(), qkv.gpu_head(), m->gpu_head(), NH, NKV, HS);
    err_fwd = max_of({err_fwd, rel_l2(gpu.to_host(out.gpu_head()), cpu.to_host(out.cpu)),
                      lse_rel_l2(gpu.to_host(lse.gpu_head()), cpu.to_host(lse.cpu))});
    cpu.attention_backward(dqkv.cpu, dout.cpu, qkv.cpu, out.cpu, lse.cpu, m->cpu, NH, NKV, HS);
    gpu.attention_backward(dqkv.gpu_head(), dout.gpu_head(), qkv.gpu_head(), out.gpu_head(), lse.gpu_head(),
                           m->gpu_head(), NH, NKV, HS);
    err_bwd = max_of({err_bwd, rel_l2(gpu.to_host(dqkv.gpu_head()), cpu.to_host(dqkv.cpu))});
  }

  auto forward = [&] { gpu.attention_forward(out.gpu, lse.gpu, qkv.gpu, mask.gpu, NH, NKV, HS); };
  const double t_fwd = h.time_ms(forward);
  const double t_fwd_bwd = h.time_ms([&] {
    forward();
    gpu.attention_backward(dqkv.gpu, dout.gpu, qkv.gpu, out.gpu, lse.gpu, mask.gpu, NH, NKV, HS);
  });

  // Causal half of the score and value products: forward 2 x 2 B NH (T^2/2) HS; backward 2.5 x forward
  // (five products of which one recomputes the scores), the count FlashAttention's benchmarks use.
  const double fwd_flops = 2.0 * double(B) * NH * double(T) * double(T) * HS;
  const std::string shape = dims({{"B", B}, {"T", T}, {"NH", NH}, {"NKV", NKV}, {"HS", HS}});
  const std::optional<SdpaPeer> peer = sdpa_peer(h, B, T, NH, NKV, HS);
  auto row = [&](const char* op, double ms, double flops, double peer_ms, double target, double err, double limit,
                 const char* formula) {
    Result r;
    r.op = op;
    r.shape = shape;
    r.unit = "TFLOP/s";
    r.ms = ms;
    r.rate = flops / (ms * 1e-3) / 1e12;
    if (peer) {
      r.peer = peer->how;
      r.peer_ms = peer_ms;
      r.peer_rate = flops / (peer_ms * 1e-3) / 1e12;
      r.ratio = r.rate / r.peer_rate;
    } else {
      r.note = "no SDPA peer (run bench/peers/sdpa_bench.py, pass --sdpa-json); ";
    }
    r.target = target;
    r.err = err;
    r.err_limit = limit;
    r.formula = formula;
    r.note += "causal, timed unpadded; validated on B=" + std::to_string(vb) + ", unpadded and left-padded";
    h.add(r);
    return r;
  };
  row("attention fwd", t_fwd, fwd_flops, peer ? peer->fwd_ms : NAN, NAN, err_fwd, kLimitBf16Long,
      "2 B NH T^2 HS (causal half)");
  row("attention fwd+bwd", t_fwd_bwd, 3.5 * fwd_flops, peer ? peer->fwd_bwd_ms : NAN, kTargetAttention,
      max_of({err_fwd, err_bwd}), kLimitBf16Long, "3.5 x 2 B NH T^2 HS (causal half)");
}

// ---- memory-bound ops -----------------------------------------------------------------------------

// A memory-bound row: GB/s = bytes / time against the measured copy bandwidth.
void add_memory_row(Harness& h, const std::string& op, const std::string& shape, double ms, double bytes, double err,
                    double limit, const std::string& formula, const std::string& note = "",
                    double target = kTargetMemory) {
  Result r;
  r.op = op;
  r.shape = shape;
  r.unit = "GB/s";
  r.ms = ms;
  r.rate = bytes / (ms * 1e-3) / 1e9;
  r.peer = "copy d2d";
  r.peer_rate = h.copy_gbs();
  r.ratio = r.rate / r.peer_rate;
  r.target = target;
  r.err = err;
  r.err_limit = limit;
  r.formula = formula;
  r.note = note;
  h.add(r);
}

// One new query per sequence over a KV cache of `length` positions: memory-bound, the cache rows of
// a kv head are read once for its group of query heads; split across blocks when B*NKV is small.
void bench_attention_decode(Harness& h, int64_t B, int64_t length, int NH, int NKV, int HS) {
  if (!h.wants("attention decode")) return;
  Harness::Scope scope(h);
  Backend &cpu = h.cpu(), &gpu = h.gpu();
  const int64_t W = int64_t(NH + 2 * NKV) * HS, KW = int64_t(NKV) * HS, OW = int64_t(NH) * HS;
  Pair qkv = h.input(Role::Act, h.random(size_t(B * W), 1.5f), {B, 1, W}, "qkv");
  Pair kc = h.input(Role::Act, h.random(size_t(B * length * KW), 1.5f), {B, length, KW}, "kcache");
  Pair vc = h.input(Role::Act, h.random(size_t(B * length * KW)), {B, length, KW}, "vcache");
  std::vector<int32_t> m(size_t(B * length), 1);
  for (int64_t t = 0; t < length / 4; ++t) m[size_t(t)] = 0;  // row 0 left-padded by a quarter
  Pair mask = h.input_ids(m, {B, length}, "mask");
  Pair out = h.output(Role::Act, {B, OW}, "out");
  cpu.attention_decode(out.cpu, qkv.cpu, kc.cpu, vc.cpu, mask.cpu, length, NH, NKV, HS);
  gpu.attention_decode(out.gpu, qkv.gpu, kc.gpu, vc.gpu, mask.gpu, length, NH, NKV, HS);
  const double err = rel_l2(gpu.to_host(out.gpu), cpu.to_host(out.cpu));
  const double t =
      h.time_ms([&] { gpu.attention_decode(out.gpu, qkv.gpu, kc.gpu, vc.gpu, mask.gpu, length, NH, NKV, HS); });
  const double bytes = 2.0 * 2 * double(B * length * KW) + 4.0 * double(B * length) + 2.0 * 2 * double(B * OW);
  add_memory_row(h, "attention decode", dims({{"B", B}, {"S", length}, {"NH", NH}, {"NKV", NKV}, {"HS", HS}}), t,
                 bytes, err, kLimitBf16, "2(K,V: 2 B S NKV HS) + 4(mask: B S) + 2(q,out: 2 B NH HS)",
                 "one query per row, row 0 left-padded by S/4", NAN);
}

void bench_norm(Harness& h, NormKind kind, int64_t N, int64_t C) {
  const bool ln = kind == NormKind::LayerNorm;
  if (!h.wants(ln ? "layernorm" : "rmsnorm")) return;
  Harness::Scope scope(h);
  Backend &cpu = h.cpu(), &gpu = h.gpu();
  const float eps = 1e-5f;
  Pair a = h.input(Role::Act, h.random(size_t(N * C)), {N, C}, "a");
  Pair b = h.input(Role::Act, h.random(size_t(N * C)), {N, C}, "b");
  Pair weight = h.input(Role::Act, h.random(size_t(C)), {C}, "weight");
  Pair bias = ln ? h.input(Role::Act, h.random(size_t(C)), {C}, "bias") : Pair{};
  Pair res = h.output(Role::Act, {N, C}, "res_out"), out = h.output(Role::Act, {N, C}, "out");
  Pair mean = ln ? h.output(Role::Grad, {N}, "mean") : Pair{};
  Pair rstd = h.output(Role::Grad, {N}, "rstd");

  cpu.residual_norm_forward(kind, res.cpu, out.cpu, mean.cpu, rstd.cpu, a.cpu, b.cpu, weight.cpu, bias.cpu, eps);
  gpu.residual_norm_forward(kind, res.gpu, out.gpu, mean.gpu, rstd.gpu, a.gpu, b.gpu, weight.gpu, bias.gpu, eps);
  double err_fwd = max_of({rel_l2(gpu.to_host(res.gpu), cpu.to_host(res.cpu)),
                           rel_l2(gpu.to_host(out.gpu), cpu.to_host(out.cpu)),
                           rel_l2(gpu.to_host(rstd.gpu), cpu.to_host(rstd.cpu))});
  if (ln) err_fwd = max_of({err_fwd, rel_l2(gpu.to_host(mean.gpu), cpu.to_host(mean.cpu))});

  // Backward on the forward's residual (the norm's input), "+=" into dinp, dweight, dbias.
  Pair dout = h.input(Role::Act, h.random(size_t(N * C)), {N, C}, "dout");
  const std::vector<float> dinp0 = h.random(size_t(N * C)), dw0 = h.random(size_t(C), 1, Role::Grad),
                           db0 = h.random(size_t(C), 1, Role::Grad);
  Pair dinp = h.input(Role::Act, dinp0, {N, C}, "dinp");
  Pair dw = h.input(Role::Grad, dw0, {C}, "dweight");
  Pair db = ln ? h.input(Role::Grad, db0, {C}, "dbias") : Pair{};
  // The CPU residual is f32, the GPU's bf16: give the CPU the GPU's rounded residual.
  cpu.from_host(res.cpu, gpu.to_host(res.gpu));
  cpu.norm_backward(kind, dinp.cpu, dw.cpu, db.cpu, dout.cpu, res.cpu, weight.cpu, mean.cpu, rstd.cpu);
  gpu.norm_backward(kind, dinp.gpu, dw.gpu, db.gpu, dout.gpu, res.gpu, weight.gpu, mean.gpu, rstd.gpu);
  double err_bwd = max_of({rel_l2(gpu.to_host(dinp.gpu), cpu.to_host(dinp.cpu), &dinp0),
                           rel_l2(gpu.to_host(dw.gpu), cpu.to_host(dw.cpu), &dw0)});
  if (ln) err_bwd = max_of({err_bwd, rel_l2(gpu.to_host(db.gpu), cpu.to_host(db.cpu), &db0)});

  const double t_fwd = h.time_ms([&] {
    gpu.residual_norm_forward(kind, res.gpu, out.gpu, mean.gpu, rstd.gpu, a.gpu, b.gpu, weight.gpu, bias.gpu, eps);
  });
  const double t_bwd = h.time_ms(
      [&] { gpu.norm_backward(kind, dinp.gpu, dw.gpu, db.gpu, dout.gpu, res.gpu, weight.gpu, mean.gpu, rstd.gpu); });

  const double n = double(N), c = double(C);
  const std::string name = ln ? "layernorm" : "rmsnorm";
  const std::string shape = dims({{"N", N}, {"C", C}});
  // bf16 = 2 bytes, f32 = 4 bytes.
  if (ln) {
    add_memory_row(h, name + " fwd (+residual)", shape, t_fwd, 2 * 4 * n * c + 2 * 2 * c + 4 * 2 * n, err_fwd,
                   kLimitBf16, "2(a,b,res_out,out: 4NC) + 2(w,b: 2C) + 4(mean,rstd: 2N)");
    add_memory_row(h, name + " bwd", shape, t_bwd, 2 * 4 * n * c + 2 * c + 4 * 2 * n + 4 * 4 * c, err_bwd,
                   kLimitBf16Long, "2(dout,inp,dinp r+w: 4NC) + 2(w: C) + 4(mean,rstd: 2N) + 4(dw,db r+w: 4C)");
  } else {
    add_memory_row(h, name + " fwd (+residual)", shape, t_fwd, 2 * 4 * n * c + 2 * c + 4 * n, err_fwd, kLimitBf16,
                   "2(a,b,res_out,out: 4NC) + 2(w: C) + 4(rstd: N)");
    add_memory_row(h, name + " bwd", shape, t_bwd, 2 * 4 * n * c + 2 * c + 4 * n + 4 * 2 * c, err_bwd, kLimitBf16Long,
                   "2(dout,inp,dinp r+w: 4NC) + 2(w: C) + 4(rstd: N) + 4(dw r+w: 2C)");
  }
}

void bench_gelu(Harness& h, int64_t N, int64_t F) {
  if (!h.wants("gelu")) return;
  Harness::Scope scope(h);
  Backend &cpu = h.cpu(), &gpu = h.gpu();
  const int64_t n = N * F;
  Pair inp = h.input(Role::Act, h.random(size_t(n), 3.0f), {N, F}, "inp");
  Pair dout = h.input(Role::Act, h.random(size_t(n)), {N, F}, "dout");
  Pair out = h.output(Role::Act, {N, F}, "out"), dinp = h.output(Role::Act, {N, F}, "dinp");
  cpu.gelu_forward(out.cpu, inp.cpu);
  gpu.gelu_forward(out.gpu, inp.gpu);
  cpu.gelu_backward(dinp.cpu, dout.cpu, inp.cpu);
  gpu.gelu_backward(dinp.gpu, dout.gpu, inp.gpu);
  const double err_fwd = rel_l2(gpu.to_host(out.gpu), cpu.to_host(out.cpu));
  const double err_bwd = rel_l2(gpu.to_host(dinp.gpu), cpu.to_host(dinp.cpu));
  const double t_fwd = h.time_ms([&] { gpu.gelu_forward(out.gpu, inp.gpu); });
  const double t_bwd = h.time_ms([&] { gpu.gelu_backward(dinp.gpu, dout.gpu, inp.gpu); });
  const std::string shape = dims({{"N", N}, {"F", F}});
  add_memory_row(h, "gelu fwd", shape, t_fwd, 2.0 * 2 * double(n), err_fwd, kLimitBf16, "2(inp,out: 2NF)");
  add_memory_row(h, "gelu bwd", shape, t_bwd, 2.0 * 3 * double(n), err_bwd, kLimitBf16, "2(dout,inp,dinp: 3NF)");
}

void bench_swiglu(Harness& h, int64_t N, int64_t F) {
  if (!h.wants("swiglu")) return;
  Harness::Scope scope(h);
  Backend &cpu = h.cpu(), &gpu = h.gpu();
  Pair inp = h.input(Role::Act, h.random(size_t(N * 2 * F), 3.0f), {N, 2 * F}, "inp");
  Pair dout = h.input(Role::Act, h.random(size_t(N * F)), {N, F}, "dout");
  Pair out = h.output(Role::Act, {N, F}, "out"), dinp = h.output(Role::Act, {N, 2 * F}, "dinp");
  cpu.swiglu_forward(out.cpu, inp.cpu);
  gpu.swiglu_forward(out.gpu, inp.gpu);
  cpu.swiglu_backward(dinp.cpu, dout.cpu, inp.cpu);
  gpu.swiglu_backward(dinp.gpu, dout.gpu, inp.gpu);
  const double err_fwd = rel_l2(gpu.to_host(out.gpu), cpu.to_host(out.cpu));
  const double err_bwd = rel_l2(gpu.to_host(dinp.gpu), cpu.to_host(dinp.cpu));
  const double t_fwd = h.time_ms([&] { gpu.swiglu_forward(out.gpu, inp.gpu); });
  const double t_bwd = h.time_ms([&] { gpu.swiglu_backward(dinp.gpu, dout.gpu, inp.gpu); });
  const double nf = double(N) * double(F);
  const std::string shape = dims({{"N", N}, {"F", F}});
  add_memory_row(h, "swiglu fwd", shape, t_fwd, 2.0 * 3 * nf, err_fwd, kLimitBf16, "2(inp: 2NF, out: NF)");
  add_memory_row(h, "swiglu bwd", shape, t_bwd, 2.0 * 5 * nf, err_bwd, kLimitBf16, "2(inp: 2NF, dout: NF, dinp: 2NF)");
}

void bench_adamw(Harness& h, int64_t n) {
  if (!h.wants("adamw")) return;
  Harness::Scope scope(h);
  Backend &cpu = h.cpu(), &gpu = h.gpu();
  const int64_t vn = std::min<int64_t>(n, int64_t(1) << 20);  // validation elements
  const std::vector<float> w0 = h.random(size_t(n));           // bf16-representable: param and master agree
  const std::vector<float> m0 = h.random(size_t(n), 1e-2f, Role::Grad);
  std::vector<float> v0 = h.random(size_t(n), 1e-4f, Role::Grad);
  for (float& x : v0) x = std::fabs(x);
  Pair param = h.input(Role::Act, w0, {n}, "param", vn);  // CPU: the f32 weights, updated in place
  Pair master = h.input(Role::Grad, w0, {n}, "master", vn);
  Pair grad = h.input(Role::Grad, h.random(size_t(n), 1e-2f, Role::Grad), {n}, "grad", vn);
  Pair m = h.input(Role::Grad, m0, {n}, "m", vn), v = h.input(Role::Grad, v0, {n}, "v", vn);
  AdamWParams hp;
  hp.lr = 1e-3f;
  hp.weight_decay = 0.1f;
  hp.step = 3;
  hp.grad_scale = 0.5f;
  // No clipping (max_grad_norm 0) and every element decayed; the sum of squares is still read on the device.
  double cpu_sumsq_value = 0;
  const Tensor cpu_sumsq(&cpu_sumsq_value, DType::F64, DeviceKind::CPU, {1}, "grad_sumsq");
  const Tensor gpu_sumsq = h.gpu_tensor(DType::F64, {1}, "grad_sumsq");
  cpu.sum_squares(cpu_sumsq, grad.cpu);
  gpu.sum_squares(gpu_sumsq, grad.gpu);
  cpu.adamw_update(param.cpu, {}, grad.cpu, m.cpu, v.cpu, param.cpu.numel(), cpu_sumsq, 0.0f, hp, 0);
  gpu.adamw_update(param.gpu_head(), master.gpu_head(), grad.gpu_head(), m.gpu_head(), v.gpu_head(), vn, gpu_sumsq, 0.0f,
                   hp, 7);
  const std::vector<float> w_head(w0.begin(), w0.begin() + vn), m_head(m0.begin(), m0.begin() + vn),
      v_head(v0.begin(), v0.begin() + vn);
  const double err = max_of({rel_l2(gpu.to_host(master.gpu_head()), cpu.to_host(param.cpu), &w_head),
                             rel_l2(gpu.to_host(m.gpu_head()), cpu.to_host(m.cpu), &m_head),
                             rel_l2(gpu.to_host(v.gpu_head()), cpu.to_host(v.cpu), &v_head)});
  const double t = h.time_ms([&] { gpu.adamw_update(param.gpu, master.gpu, grad.gpu, m.gpu, v.gpu, n, gpu_sumsq, 0.0f, hp, 7); });
  add_memory_row(h, "adamw", dims({{"n", n}}), t, 30.0 * double(n), err, kLimitF32,
                 "n x (4 x grad,m,v,master read + 4 x m,v,master write + 2 x param write) = 30 n",
                 "validated on " + std::to_string(vn) + " elements (increments of master, m, v)");
}

// ---- fused vocabulary pass --------------------------------------------------------------------------

void bench_lm_head(Harness& h, const char* model, int64_t N, int64_t C, int64_t V) {
  if (!h.wants("lm_logprob")) return;
  Harness::Scope scope(h);
  Backend &cpu = h.cpu(), &gpu = h.gpu();
  const int64_t vrows = std::min<int64_t>(N, 272);  // two of the CUDA op's 256-row chunks, the second partial
  const float inv_t = 1.0f / 0.7f;
  Pair hidden = h.input(Role::Act, h.random(size_t(N * C)), {N, C}, "hidden", vrows);
  Pair wte = h.input(Role::Act, h.random(size_t(V * C), 0.1f), {V, C}, "wte");
  Pair targets = h.input_ids(h.random_ids(size_t(N), 0, int32_t(V)), {N}, "targets", vrows);
  Pair logp = h.output(Role::Grad, {N}, "logp", vrows), ent = h.output(Role::Grad, {N}, "entropy", vrows),
       lse = h.output(Role::Grad, {N}, "lse", vrows);
  Pair g_logp = h.input(Role::Grad, h.random(size_t(N), 1, Role::Grad), {N}, "g_logp", vrows);
  Pair g_ent = h.input(Role::Grad, h.random(size_t(N), 1, Role::Grad), {N}, "g_entropy", vrows);
  Pair dhidden = h.output(Role::Act, {N, C}, "dhidden", vrows);
  const std::vector<float> dwte0 = h.random(size_t(V * C), 1e-2f, Role::Grad);
  Pair dwte = h.input(Role::Grad, dwte0, {V, C}, "dwte");

  cpu.lm_logprob_entropy_forward(logp.cpu, ent.cpu, lse.cpu, hidden.cpu, wte.cpu, targets.cpu, inv_t);
  gpu.lm_logprob_entropy_forward(logp.gpu_head(), ent.gpu_head(), lse.gpu_head(), hidden.gpu_head(), wte.gpu,
                                 targets.gpu_head(), inv_t);
  const double err_fwd = max_of({rel_l2(gpu.to_host(logp.gpu_head()), cpu.to_host(logp.cpu)),
                                 rel_l2(gpu.to_host(ent.gpu_head()), cpu.to_host(ent.cpu)),
                                 rel_l2(gpu.to_host(lse.gpu_head()), cpu.to_host(lse.cpu))});
  cpu.lm_logprob_entropy_backward(dhidden.cpu, dwte.cpu, g_logp.cpu, g_ent.cpu, hidden.cpu, wte.cpu, targets.cpu,
                                  lse.cpu, ent.cpu, inv_t);
  gpu.lm_logprob_entropy_backward(dhidden.gpu_head(), dwte.gpu, g_logp.gpu_head(), g_ent.gpu_head(),
                                  hidden.gpu_head(), wte.gpu, targets.gpu_head(), lse.gpu_head(), ent.gpu_head(), inv_t);
  const double err_bwd = max_of({rel_l2(gpu.to_host(dhidden.gpu_head()), cpu.to_host(dhidden.cpu)),
                                 rel_l2(gpu.to_host(dwte.gpu), cpu.to_host(dwte.cpu), &dwte0)});

  const double t_fwd = h.time_ms([&] {
    gpu.lm_logprob_entropy_forward(logp.gpu, ent.gpu, lse.gpu, hidden.gpu, wte.gpu, targets.gpu, inv_t);
  });
  const double t_bwd = h.time_ms([&] {
    gpu.lm_logprob_entropy_backward(dhidden.gpu, dwte.gpu, g_logp.gpu, g_ent.gpu, hidden.gpu, wte.gpu, targets.gpu,
                                    lse.gpu, ent.gpu, inv_t);
  });
  // Peer: the same GEMMs through raw cublasGemmEx over all N rows at once (logits f32, dlogits bf16),
  // with no softmax work: the floor the fused pass can approach.
  Tensor logits = h.gpu_tensor(DType::F32, {N, V}, "peer logits");
  Tensor dz = h.gpu_tensor(DType::BF16, {N, V}, "peer dlogits");
  auto logits_gemm = [&] {
    gemm(h, CUBLAS_OP_T, CUBLAS_OP_N, V, N, C, wte.gpu.data, C, hidden.gpu.data, C, 0.0f, logits.data, CUDA_R_32F, V,
         inv_t);
  };
  logits_gemm();
  gpu.convert(dz, logits);  // random-looking dlogits for the peer's backward GEMMs (never constants)
  const double p_fwd = h.time_ms(logits_gemm);
  const double p_bwd = h.time_ms([&] {
    logits_gemm();
    gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, C, N, V, wte.gpu.data, C, dz.data, V, 0.0f, dhidden.gpu.data, CUDA_R_16BF, C);
    gemm(h, CUBLAS_OP_N, CUBLAS_OP_T, C, V, N, hidden.gpu.data, C, dz.data, V, 1.0f, dwte.gpu.data, CUDA_R_32F, C);
  });

  const double nvc = double(N) * double(V) * double(C);
  const double bytes_fwd = 2.0 * double(N) * C + 2.0 * double(V) * C + 4.0 * N + 12.0 * N;
  const std::string shape = std::string(model) + " " + dims({{"N", N}, {"C", C}, {"V", V}});
  for (int pass = 0; pass < 2; ++pass) {
    Result r;
    r.op = pass == 0 ? "lm_logprob_entropy fwd" : "lm_logprob_entropy bwd";
    r.shape = shape;
    r.unit = "TFLOP/s";
    const double f = (pass == 0 ? 2.0 : 6.0) * nvc;
    r.ms = pass == 0 ? t_fwd : t_bwd;
    r.rate = f / (r.ms * 1e-3) / 1e12;
    r.peer = pass == 0 ? "cuBLAS logits GEMM" : "cuBLAS 3 GEMMs";
    r.peer_ms = pass == 0 ? p_fwd : p_bwd;
    r.peer_rate = f / (r.peer_ms * 1e-3) / 1e12;
    r.ratio = r.rate / r.peer_rate;
    r.target = kTargetMemory;
    r.err = pass == 0 ? err_fwd : err_bwd;
    r.err_limit = kLimitBf16Long;
    r.formula = pass == 0 ? "2 N V C" : "6 N V C (logits again, dhidden, dwte)";
    const double gbs = (pass == 0 ? bytes_fwd : bytes_fwd + 2.0 * N * C + 8.0 * V * C + 8.0 * N) / (r.ms * 1e-3) / 1e9;
    r.note = "compute-bound (2NVC FLOPs): judged against its GEMM floor, not copy bandwidth; read-once bytes give " +
             std::to_string(int(gbs)) + " GB/s; " + (pass == 0 ? "includes Backend's host check of the target ids; " : "") +
             "validated on " + std::to_string(vrows) + " rows";
    h.add(r);
  }
}

int run(Harness& h) {
  std::printf("kernel_bench on %s (%d SMs, L2 %d MB)\n", h.device_name().c_str(), h.props().multiProcessorCount,
              h.props().l2CacheSize >> 20);
  h.copy_gbs();
  // GPT-2 small and Qwen2.5-0.5B projections at N = 8 x 192 tokens.
  const int64_t N = 8 * 192;
  bench_matmul(h, "gpt2", N, 768, 2304);
  bench_matmul(h, "gpt2", N, 768, 3072);
  bench_matmul(h, "gpt2", N, 3072, 768);
  bench_matmul(h, "qwen0.5b", N, 896, 1152);
  bench_matmul(h, "qwen0.5b", N, 896, 9728);
  bench_matmul(h, "qwen0.5b", N, 4864, 896);
  for (int64_t T : {192, 1024}) {
    bench_attention(h, 8, T, 12, 12, 64);
    bench_attention(h, 8, T, 14, 2, 64);
  }
  bench_attention_decode(h, 8, 1024, 14, 2, 64);  // Qwen2.5-0.5B: 16 (b, kv head) pairs, split-K
  bench_attention_decode(h, 64, 512, 12, 12, 64);  // GPT-2 small: 768 pairs, no split
  // Memory-bound ops at 8 x 1024 tokens (big enough to stream from device memory).
  const int64_t NM = 8 * 1024;
  bench_norm(h, NormKind::LayerNorm, NM, 768);
  bench_norm(h, NormKind::RMSNorm, NM, 896);
  bench_gelu(h, NM, 3072);
  bench_swiglu(h, NM, 4864);
  bench_adamw(h, int64_t(1) << 26);
  bench_lm_head(h, "gpt2", N, 768, 50257);
  bench_lm_head(h, "qwen0.5b", N, 896, 151936);
  h.print_table();
  if (!h.options().json_path.empty()) h.write_json(h.options().json_path);
  return h.all_valid() ? 0 : 1;
}

}  // namespace
}  // namespace ppo::kbench

int main(int argc, char** argv) {
  ppo::kbench::Options options;
  CLI::App app{"kernel_bench: validate each CUDA op against the CPU reference, then time it against a peer"};
  app.add_option("--only", options.only, "run only the ops whose name contains this (matmul, attention, layernorm, ...)");
  app.add_option("--json", options.json_path, "write the table as JSON here (default $OUT/kernel_bench.json)");
  app.add_option("--sdpa-json", options.sdpa_json, "PyTorch SDPA results from bench/peers/sdpa_bench.py");
  app.add_option("--budget-ms", options.budget_ms, "device time per measurement's timed repetitions");
  CLI11_PARSE(app, argc, argv);
  if (options.json_path.empty()) {
    if (const char* out = std::getenv("OUT"); out && *out) options.json_path = std::string(out) + "/kernel_bench.json";
  }
  try {
    ppo::kbench::Harness harness(options);
    return ppo::kbench::run(harness);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kernel_bench: %s\n", e.what());
    return 2;
  }
}
