// KV cache write and single-query decode attention: prefill (attention_forward over T positions)
// and token-by-token decode over the cache give the same outputs, left-padded rows included;
// CUDA against CPU.
#include <cmath>
#include "helpers.h"

using namespace ppo;
using namespace ppo::test;

namespace {

using Shape = AttentionShape;

// Columns [t0, t1) of a (B,T,W) host array.
std::vector<float> columns(const std::vector<float>& x, int64_t B, int64_t T, int64_t W, int64_t t0, int64_t t1) {
  std::vector<float> y;
  for (int64_t b = 0; b < B; ++b) y.insert(y.end(), x.begin() + (b * T + t0) * W, x.begin() + (b * T + t1) * W);
  return y;
}

}  // namespace

TEST_CASE("prefill and token-by-token decode over the KV cache agree (GQA, left padding)") {
  // B=3: row 0 unpadded, row 1 left-padded by 2, row 2 entirely padding (decode gives 0 like prefill).
  // Cache capacity S=10 > T=7: positions past `length` hold NaN and mask 1, so reading them fails.
  for (Shape s : {Shape{3, 7, 4, 2, 8}, Shape{3, 7, 3, 3, 6}}) {
    for (int64_t prompt : {int64_t(1), int64_t(4)}) {  // positions written at once before decoding
      CAPTURE(s.NKV);
      CAPTURE(prompt);
      const int64_t S = 10, W = s.width(), OW = int64_t(s.NH) * s.HS, KW = int64_t(s.NKV) * s.HS;
      const int pads[3] = {0, 2, 7};
      std::vector<int32_t> mask_bt(size_t(s.B * s.T)), mask_bs(size_t(s.B * S), 1);
      for (int64_t b = 0; b < s.B; ++b)
        for (int64_t t = 0; t < s.T; ++t) mask_bt[size_t(b * s.T + t)] = mask_bs[size_t(b * S + t)] = t >= pads[b];
      BackendFixture fx(DeviceKind::CPU, Precision::F32);
      const auto x = randn(size_t(s.B * s.T * W), 501);
      Tensor out = fx.poisoned(DType::F32, {s.B, s.T, OW}, "out"), lse = fx.poisoned(DType::F32, {s.B, s.NH, s.T}, "lse");
      fx.backend->attention_forward(out, lse, fx.upload(x, DType::F32, {s.B, s.T, W}, "qkv"),
                                    fx.upload_ids(mask_bt, {s.B, s.T}, "mask"), s.NH, s.NKV, s.HS);
      const auto prefill = fx.backend->to_host(out);

      Tensor kc = fx.poisoned(DType::F32, {s.B, S, KW}, "kcache"), vc = fx.poisoned(DType::F32, {s.B, S, KW}, "vcache");
      Tensor m = fx.upload_ids(mask_bs, {s.B, S}, "mask");
      fx.backend->kv_cache_write(kc, vc, fx.upload(columns(x, s.B, s.T, W, 0, prompt), DType::F32, {s.B, prompt, W}, "prompt"),
                                 0, s.NH, s.NKV, s.HS);
      for (int64_t t = prompt - 1; t < s.T; ++t) {
        CAPTURE(t);
        Tensor q = fx.upload(columns(x, s.B, s.T, W, t, t + 1), DType::F32, {s.B, 1, W}, "qkv_t");
        if (t >= prompt) fx.backend->kv_cache_write(kc, vc, q, t, s.NH, s.NKV, s.HS);
        Tensor o = fx.poisoned(DType::F32, {s.B, OW}, "out_t");
        fx.backend->attention_decode(o, q, kc, vc, m, t + 1, s.NH, s.NKV, s.HS);
        // Same keys, same order, same arithmetic: equal up to f32 rounding (1e-6).
        check_close(fx.backend->to_host(o), columns(prefill, s.B, s.T, OW, t, t + 1), 1e-6, 1e-6, "decode vs prefill");
      }
      // The cache holds exactly the k and v heads of qkv at positions [0, T).
      const auto kh = fx.backend->to_host(kc), vh = fx.backend->to_host(vc);
      for (int64_t b = 0; b < s.B; ++b)
        for (int64_t t = 0; t < s.T; ++t)
          for (int64_t i = 0; i < KW; ++i) {
            REQUIRE(kh[size_t((b * S + t) * KW + i)] == x[size_t((b * s.T + t) * W + s.NH * s.HS + i)]);
            REQUIRE(vh[size_t((b * S + t) * KW + i)] == x[size_t((b * s.T + t) * W + (s.NH + s.NKV) * s.HS + i)]);
          }
    }
  }
}

TEST_CASE("kv_cache_write and attention_decode CUDA vs CPU (split-K over long caches, GQA, padding)") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  struct Case {
    Shape s;  // T = 1: the new position
    int64_t S, length;
    std::vector<int> pads;  // left padding per row; pads == length: a row that sees no key (out 0)
  };
  // The emulated device has 132 SMs: B*NKV*ceil(NH/NKV/4) blocks below that split the keys into
  // min(ceil(264 / blocks), ceil(length / 64)) blocks each.
  const Case cases[] = {
      {{3, 1, 8, 2, 128}, 300, 257, {0, 31, 257}},  // 6 blocks x 5 splits, 16-byte loads, a row with no key
      {{2, 1, 8, 2, 64}, 1100, 1030, {0, 700}},     // long cache: 4 blocks x 17 splits
      {{1, 1, 16, 2, 128}, 700, 600, {5}},          // group of 8 in 2 blocks: 4 blocks x 10 splits
      {{2, 1, 10, 1, 12}, 200, 150, {0, 149}},      // HS 12 (bf16 loads), group of 10 in 3 blocks, one key
      {{34, 1, 8, 4, 64}, 40, 33, std::vector<int>(34, 2)},  // 136 blocks: no split
  };
  for (const Case& c : cases) {
    const Shape& s = c.s;
    CAPTURE(s.B);
    CAPTURE(s.HS);
    CAPTURE(c.length);
    const int64_t S = c.S, length = c.length, W = s.width(), OW = int64_t(s.NH) * s.HS, KW = int64_t(s.NKV) * s.HS;
    BackendFixture cpu(DeviceKind::CPU, Precision::F32);
    auto both = [&](const std::vector<float>& v, std::initializer_list<int64_t> dims, const char* name) {
      Tensor g = gpu->upload(v, DType::BF16, dims, name);
      Tensor c = cpu.pool->take(DType::F32, dims, name);
      cpu.backend->convert(c, g);  // the CPU gets the same bf16-rounded values
      return std::pair<Tensor, Tensor>{c, g};
    };
    auto [kc, kg] = both(randn(size_t(s.B * S * KW), 601), {s.B, S, KW}, "kcache");
    auto [vc, vg] = both(randn(size_t(s.B * S * KW), 602), {s.B, S, KW}, "vcache");
    auto [qc, qg] = both(randn(size_t(s.B * W), 603, 2.0f), {s.B, 1, W}, "qkv");
    std::vector<int32_t> mask(size_t(s.B * S));
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t t = 0; t < S; ++t) mask[size_t(b * S + t)] = t >= c.pads[size_t(b)];
    Tensor mc = cpu.upload_ids(mask, {s.B, S}, "mask"), mg = gpu->upload_ids(mask, {s.B, S}, "mask");
    cpu.backend->kv_cache_write(kc, vc, qc, length - 1, s.NH, s.NKV, s.HS);
    gpu->backend->kv_cache_write(kg, vg, qg, length - 1, s.NH, s.NKV, s.HS);
    CHECK(rel_l2(gpu->backend->to_host(kg), cpu.backend->to_host(kc)) == 0);  // a copy of bf16 values
    CHECK(rel_l2(gpu->backend->to_host(vg), cpu.backend->to_host(vc)) == 0);
    Tensor oc = cpu.poisoned(DType::F32, {s.B, OW}, "out"), og = gpu->poisoned(DType::BF16, {s.B, OW}, "out");
    cpu.backend->attention_decode(oc, qc, kc, vc, mc, length, s.NH, s.NKV, s.HS);
    gpu->backend->attention_decode(og, qg, kg, vg, mg, length, s.NH, s.NKV, s.HS);
    const auto got = gpu->backend->to_host(og), want = cpu.backend->to_host(oc);
    // Measured on the emulated device: rel_l2 <= 1.7e-3 (the bf16 rounding of out; f32 softmax).
    CHECK(rel_l2(got, want) < 5e-3);
    for (int64_t b = 0; b < s.B; ++b)
      if (c.pads[size_t(b)] >= length)
        for (int64_t i = 0; i < OW; ++i) REQUIRE(got[size_t(b * OW + i)] == 0.0f);  // no visible key
    gpu->backend->attention_decode(og, qg, kg, vg, mg, length, s.NH, s.NKV, s.HS);
    CHECK(gpu->backend->to_host(og) == got);  // deterministic: bitwise equal

    // The length read on the device (a decode graph's step): the splits the longest cache S gets,
    // each over an even share of this length; the KV write at a start read there too.
    Tensor counter = gpu->upload_ids({int32_t(length - 9)}, {1}, "gen_step");
    gpu->backend->kv_cache_write(kg, vg, qg, DeviceIndex(counter, 8), s.NH, s.NKV, s.HS);
    CHECK(rel_l2(gpu->backend->to_host(kg), cpu.backend->to_host(kc)) == 0);
    gpu->backend->attention_decode(og, qg, kg, vg, mg, DeviceIndex(counter, 9), s.NH, s.NKV, s.HS);
    const auto counted = gpu->backend->to_host(og);
    CHECK(rel_l2(counted, want) < 5e-3);
  }
}

TEST_CASE(
    "kv_cache_write and attention_decode with a device counter: the host value's results; a start outside the "
    "cache is an error naming the counter") {
  const Shape s{2, 1, 4, 2, 8};
  const int64_t S = 6, W = s.width(), OW = int64_t(s.NH) * s.HS, KW = int64_t(s.NKV) * s.HS;
  auto run = [&](BackendFixture& fx) {
    const DType act = fx.backend->act_dtype();
    Tensor kc = fx.upload(randn(size_t(s.B * S * KW), 611), act, {s.B, S, KW}, "kcache");
    Tensor vc = fx.upload(randn(size_t(s.B * S * KW), 612), act, {s.B, S, KW}, "vcache");
    Tensor q = fx.upload(randn(size_t(s.B * W), 613), act, {s.B, 1, W}, "qkv");
    Tensor m = fx.upload_ids(std::vector<int32_t>(size_t(s.B * S), 1), {s.B, S}, "mask");
    Tensor counter = fx.upload_ids({2}, {1}, "gen_step");
    Tensor o = fx.poisoned(act, {s.B, OW}, "out");
    fx.backend->kv_cache_write(kc, vc, q, DeviceIndex(counter, 1), s.NH, s.NKV, s.HS);          // position 3
    fx.backend->attention_decode(o, q, kc, vc, m, DeviceIndex(counter, 2), s.NH, s.NKV, s.HS);  // length 4
    const std::vector<float> k_counted = fx.backend->to_host(kc), o_counted = fx.backend->to_host(o);
    fx.backend->kv_cache_write(kc, vc, q, 3, s.NH, s.NKV, s.HS);
    fx.backend->attention_decode(o, q, kc, vc, m, 4, s.NH, s.NKV, s.HS);
    CHECK(fx.backend->to_host(kc) == k_counted);
    CHECK(fx.backend->to_host(o) == o_counted);
    auto outside = [&] {
      fx.backend->kv_cache_write(kc, vc, q, DeviceIndex(counter, S - 2), s.NH, s.NKV, s.HS);  // position S
      fx.backend->synchronize();
    };
    CHECK_THROWS_WITH_AS(outside(), doctest::Contains("gen_step"), Error);
    CHECK(fx.backend->to_host(kc) == k_counted);  // nothing written
  };
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  run(cpu);
  auto gpu = cuda_backend_or_skip();
  if (gpu) run(*gpu);
}
