// Causal grouped-query attention with a key mask: forward against a naive float64 reference with
// an explicit TxT softmax, left padding == no padding (with positions from the first real token),
// backward by float64 finite differences, CUDA against CPU.
#include <cmath>
#include "helpers.h"

using namespace ppo;
using namespace ppo::test;

namespace {

using Shape = AttentionShape;

// Row b of the mask starts with pads[b] zeros (left padding), then ones.
std::vector<int32_t> left_padded_mask(const Shape& s, const std::vector<int>& pads) {
  std::vector<int32_t> m(size_t(s.B * s.T));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = 0; t < s.T; ++t) m[size_t(b * s.T + t)] = t >= pads[size_t(b)] ? 1 : 0;
  return m;
}

// Naive attention in double: the full (T,T) score matrix per (b,h), masked entries -inf, softmax
// along each row. Writes out (B,T,NH*HS) and lse (B,NH,T); a row with no visible key -> 0, -inf.
void attention_reference(const std::vector<float>& qkv, const std::vector<int32_t>& mask, const Shape& s,
                         std::vector<float>& out, std::vector<float>& lse) {
  const int64_t T = s.T, W = s.width();
  out.assign(size_t(s.out_numel()), 0.f);
  lse.assign(size_t(s.B * s.NH * T), 0.f);
  std::vector<double> S(size_t(T * T));
  for (int64_t b = 0; b < s.B; ++b)
    for (int h = 0; h < s.NH; ++h) {
      const int kvh = h / (s.NH / s.NKV);
      auto at = [&](int64_t t, int64_t off) { return double(qkv[size_t((b * T + t) * W + off)]); };
      for (int64_t t = 0; t < T; ++t)
        for (int64_t u = 0; u < T; ++u) {
          double dot = 0;
          for (int i = 0; i < s.HS; ++i) dot += at(t, h * s.HS + i) * at(u, (s.NH + kvh) * s.HS + i);
          const bool visible = u <= t && mask[size_t(b * T + u)] == 1;
          S[size_t(t * T + u)] = visible ? dot / std::sqrt(double(s.HS)) : -INFINITY;
        }
      for (int64_t t = 0; t < T; ++t) {
        double mx = -INFINITY;
        for (int64_t u = 0; u < T; ++u) mx = std::max(mx, S[size_t(t * T + u)]);
        if (mx == -INFINITY) {
          lse[size_t((b * s.NH + h) * T + t)] = -INFINITY;
          continue;
        }
        double Z = 0;
        for (int64_t u = 0; u < T; ++u) Z += std::exp(S[size_t(t * T + u)] - mx);
        lse[size_t((b * s.NH + h) * T + t)] = float(mx + std::log(Z));
        for (int i = 0; i < s.HS; ++i) {
          double o = 0;
          for (int64_t u = 0; u < T; ++u) o += std::exp(S[size_t(t * T + u)] - mx) / Z * at(u, (s.NH + s.NKV + kvh) * s.HS + i);
          out[size_t((b * T + t) * s.NH * s.HS + h * s.HS + i)] = float(o);
        }
      }
    }
}

// lse with -inf entries checked exactly, the rest by tolerance.
void check_lse(const std::vector<float>& got, const std::vector<float>& want, double tol, const char* what) {
  std::vector<float> g = got, w = want;
  for (size_t i = 0; i < w.size(); ++i)
    if (std::isinf(w[i])) {
      REQUIRE_MESSAGE((std::isinf(g[i]) && g[i] < 0), what, ": lse[", i, "] = ", g[i], ", want -inf");
      g[i] = w[i] = 0;
    }
  check_close(g, w, tol, tol, what);
}

// The CPU forward (f32) on qkv x and mask m against attention_reference, out and lse within tol.
void check_forward(const Shape& s, const std::vector<float>& x, const std::vector<int32_t>& m, double tol) {
  BackendFixture fx(DeviceKind::CPU, Precision::F32);
  Tensor out = fx.poisoned(DType::F32, {s.B, s.T, int64_t(s.NH) * s.HS}, "out");
  Tensor lse = fx.poisoned(DType::F32, {s.B, s.NH, s.T}, "lse");
  fx.backend->attention_forward(out, lse, fx.upload(x, DType::F32, {s.B, s.T, s.width()}, "qkv"),
                                fx.upload_ids(m, {s.B, s.T}, "mask"), s.NH, s.NKV, s.HS);
  std::vector<float> out_ref, lse_ref;
  attention_reference(x, m, s, out_ref, lse_ref);
  check_close(fx.backend->to_host(out), out_ref, tol, tol, "attention out");
  check_lse(fx.backend->to_host(lse), lse_ref, tol, "attention lse");
}

}  // namespace

TEST_CASE("attention_forward matches a naive TxT softmax (GQA, left padding, odd sizes)") {
  // B=3: row 0 unpadded, row 1 left-padded by 3, row 2 entirely padding (every query sees nothing).
  for (Shape s : {Shape{3, 7, 4, 2, 8}, Shape{3, 7, 3, 3, 6}, Shape{3, 7, 4, 1, 6}}) {
    CAPTURE(s.NH);
    CAPTURE(s.NKV);
    CAPTURE(s.HS);
    // f32 dot products and exp over <= 7 keys: relative error ~ 1e-6; tolerance 1e-5.
    check_forward(s, randn(size_t(s.qkv_numel()), 101), left_padded_mask(s, {0, 3, 7}), 1e-5);
  }
}

TEST_CASE("attention_forward across tiles (T > 2 tiles of 64) matches the naive TxT softmax") {
  // Queries and keys run in tiles of 64 positions from each row's first visible one: row 0
  // unpadded (tiles 0-63, 64-127, 128-149), row 1 left-padded by 70 (tiles 70-133, 134-149),
  // row 2 with holes in the mask after its first real token.
  const Shape s{3, 150, 4, 2, 16};
  auto m = left_padded_mask(s, {0, 70, 3});
  for (int64_t t : {10, 11, 64, 65, 100}) m[size_t(2 * s.T + t)] = 0;
  // f32 scores and exp over up to 150 keys, rescaled once per key tile: ~1e-6 relative.
  check_forward(s, randn(size_t(s.qkv_numel()), 111), m, 2e-5);
}

TEST_CASE("attention: a left-padded sequence gives exactly the outputs and gradients of the unpadded one") {
  // RoPE, then attention, forward and backward. Padded: P junk positions (random, not zeros) with
  // mask 0, then the same R real positions with positions 0..R-1 counted from the first real token.
  // (3, 4): one tile; (67, 70): two tiles of 64 real positions, after more than a tile of padding.
  for (const auto& [p_len, r_len] : {std::pair<int, int>{3, 4}, std::pair<int, int>{67, 70}}) {
    const int P = p_len, R = r_len;
    CAPTURE(P);
    const int NH = 4, NKV = 2, HS = 8;
    const Shape sp{1, P + R, NH, NKV, HS}, su{1, R, NH, NKV, HS};
    const int64_t W = sp.width(), OW = int64_t(NH) * HS;
    BackendFixture fx(DeviceKind::CPU, Precision::F32);
    const auto xp = randn(size_t(sp.qkv_numel()), 201);
    const std::vector<float> xu(xp.begin() + P * W, xp.end());
    const auto doutp = randn(size_t(sp.out_numel()), 202);
    const std::vector<float> doutu(doutp.begin() + P * OW, doutp.end());

    struct Result { std::vector<float> out, lse, dqkv; };
    auto run = [&](const Shape& s, const std::vector<float>& x, const std::vector<float>& dout, int pads) {
      std::vector<int32_t> pos(size_t(s.T)), mask(size_t(s.T));
      for (int64_t t = 0; t < s.T; ++t) {
        mask[size_t(t)] = t >= pads;
        pos[size_t(t)] = int32_t(std::max<int64_t>(t - pads, 0));
      }
      Tensor qkv = fx.upload(x, DType::F32, {1, s.T, W}, "qkv");
      Tensor p = fx.upload_ids(pos, {1, s.T}, "pos"), m = fx.upload_ids(mask, {1, s.T}, "mask");
      Tensor out = fx.poisoned(DType::F32, {1, s.T, OW}, "out"), lse = fx.poisoned(DType::F32, {1, NH, s.T}, "lse");
      Tensor dqkv = fx.poisoned(DType::F32, {1, s.T, W}, "dqkv");
      fx.backend->rope_forward(qkv, p, NH, NKV, HS, 10000.0f);
      fx.backend->attention_forward(out, lse, qkv, m, NH, NKV, HS);
      fx.backend->attention_backward(dqkv, fx.upload(dout, DType::F32, {1, s.T, OW}, "dout"), qkv, out, lse, m, NH, NKV, HS);
      fx.backend->rope_backward(dqkv, p, NH, NKV, HS, 10000.0f);
      return Result{fx.backend->to_host(out), fx.backend->to_host(lse), fx.backend->to_host(dqkv)};
    };
    const Result u = run(su, xu, doutu, 0), p = run(sp, xp, doutp, P);
    check_close(std::vector<float>(p.out.begin() + P * OW, p.out.end()), u.out, 0, 0, "out, real positions");
    check_close(std::vector<float>(p.dqkv.begin() + P * W, p.dqkv.end()), u.dqkv, 0, 0, "dqkv, real positions");
    check_close(std::vector<float>(p.out.begin(), p.out.begin() + P * OW), std::vector<float>(size_t(P * OW), 0.f), 0, 0, "out at padding");
    check_close(std::vector<float>(p.dqkv.begin(), p.dqkv.begin() + P * W), std::vector<float>(size_t(P * W), 0.f), 0, 0, "dqkv at padding");
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < P + R; ++t) {
        const float got = p.lse[size_t(h * (P + R) + t)];
        if (t < P) CHECK((std::isinf(got) && got < 0));
        else CHECK(got == u.lse[size_t(h * R + t - P)]);
      }
  }
}

TEST_CASE("attention_backward matches float64 finite differences") {
  // L = sum(w * out). Central differences with eps = 1e-5: truncation ~ eps^2 |L'''| ~ 1e-10,
  // rounding ~ 1e-16 |L| / eps ~ 1e-10; tolerance 1e-7 + 1e-6 |ref| leaves a wide margin while a
  // wrong term (O(0.01..1)) fails. Includes a left-padded row and a fully padded row (zero gradient).
  // The third shape crosses tiles (T = 100: query and key tiles of 64 from positions 0 and 9).
  for (Shape s : {Shape{3, 7, 4, 2, 6}, Shape{2, 5, 2, 2, 8}, Shape{2, 100, 2, 1, 4}}) {
    CAPTURE(s.NH);
    CAPTURE(s.NKV);
    CAPTURE(s.T);
    BackendFixture fx(DeviceKind::CPU, Precision::F64);
    const auto x = randn(size_t(s.qkv_numel()), 301);
    const auto w = randn(size_t(s.out_numel()), 302);
    const std::vector<int> pads = s.B == 3 ? std::vector<int>{0, 2, int(s.T)} : std::vector<int>{s.T > 64 ? 9 : 1, 0};
    Tensor qkv = fx.upload(x, DType::F64, {s.B, s.T, s.width()}, "qkv");
    Tensor m = fx.upload_ids(left_padded_mask(s, pads), {s.B, s.T}, "mask");
    Tensor out = fx.poisoned(DType::F64, {s.B, s.T, int64_t(s.NH) * s.HS}, "out");
    Tensor lse = fx.poisoned(DType::F64, {s.B, s.NH, s.T}, "lse");
    auto loss = [&]() {
      fx.backend->attention_forward(out, lse, qkv, m, s.NH, s.NKV, s.HS);
      double l = 0;
      for (int64_t i = 0; i < s.out_numel(); ++i) l += w[size_t(i)] * out.ptr<double>()[i];
      return l;
    };
    loss();
    Tensor dqkv = fx.poisoned(DType::F64, {s.B, s.T, s.width()}, "dqkv");
    fx.backend->attention_backward(dqkv, fx.upload(w, DType::F64, {s.B, s.T, int64_t(s.NH) * s.HS}, "dout"), qkv, out,
                                   lse, m, s.NH, s.NKV, s.HS);
    std::vector<float> got(size_t(s.qkv_numel())), want(size_t(s.qkv_numel()));
    for (int64_t i = 0; i < s.qkv_numel(); ++i) got[size_t(i)] = float(dqkv.ptr<double>()[i]);
    const double eps = 1e-5;
    for (int64_t i = 0; i < s.qkv_numel(); ++i) {
      double* xi = qkv.ptr<double>() + i;
      const double x0 = *xi;
      *xi = x0 + eps;
      const double lp = loss();
      *xi = x0 - eps;
      const double lm = loss();
      *xi = x0;
      want[size_t(i)] = float((lp - lm) / (2 * eps));
    }
    check_close(got, want, 1e-7, 1e-6, "attention dqkv vs finite differences");
  }
}

namespace {

// Forward and backward outputs of one backend.
struct Outputs {
  std::vector<float> out, lse, dqkv;
};

// attention_forward then attention_backward on `fx` (bf16 on CUDA, f32 on the CPU), from the same
// host values; outputs poisoned with NaN first.
Outputs run_attention(BackendFixture& fx, DType dtype, const Shape& s, const std::vector<float>& qkv,
                      const std::vector<float>& dout, const std::vector<int32_t>& mask) {
  const int64_t OW = int64_t(s.NH) * s.HS;
  Tensor q = fx.upload(qkv, dtype, {s.B, s.T, s.width()}, "qkv");
  Tensor d = fx.upload(dout, dtype, {s.B, s.T, OW}, "dout");
  Tensor m = fx.upload_ids(mask, {s.B, s.T}, "mask");
  Tensor out = fx.poisoned(dtype, {s.B, s.T, OW}, "out"), lse = fx.poisoned(DType::F32, {s.B, s.NH, s.T}, "lse");
  Tensor dqkv = fx.poisoned(dtype, {s.B, s.T, s.width()}, "dqkv");
  fx.backend->attention_forward(out, lse, q, m, s.NH, s.NKV, s.HS);
  fx.backend->attention_backward(dqkv, d, q, out, lse, m, s.NH, s.NKV, s.HS);
  return Outputs{fx.backend->to_host(out), fx.backend->to_host(lse), fx.backend->to_host(dqkv)};
}

// The q (part 0), k (1) or v (2) columns of a (B,T,(NH+2*NKV)*HS) array.
std::vector<float> qkv_part(const std::vector<float>& x, const Shape& s, int part) {
  const int64_t begin = part == 0 ? 0 : part == 1 ? int64_t(s.NH) * s.HS : int64_t(s.NH + s.NKV) * s.HS;
  const int64_t width = part == 0 ? int64_t(s.NH) * s.HS : int64_t(s.NKV) * s.HS;
  std::vector<float> y;
  for (int64_t r = 0; r < s.B * s.T; ++r)
    y.insert(y.end(), x.begin() + r * s.width() + begin, x.begin() + r * s.width() + begin + width);
  return y;
}

std::vector<float> bf16_rounded(std::vector<float> v) {
  for (float& x : v) x = f32_from_bf16(bf16_from_f32(x));
  return v;
}

// Largest |x|.
double max_abs(const std::vector<float>& x) {
  double m = 0;
  for (float v : x) m = std::max(m, double(std::fabs(v)));
  return m;
}

}  // namespace

TEST_CASE("attention CUDA vs CPU: tensor cores (HS 64, 128) and SIMT (other HS)") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  struct Case {
    Shape s;
    std::vector<int> pads;  // left padding per batch row; pads == T: a row where no query sees a key
    float scale;            // of the random q, k, v (larger: sharper softmax rows)
  };
  const Case cases[] = {
      {{3, 67, 4, 2, 64}, {0, 5, 67}, 1.0f},  // GQA 2, odd T over two tiles, a fully padded row
      {{2, 130, 6, 2, 128}, {17, 0}, 1.0f},   // GQA 3, three tiles, the last with 2 rows
      {{2, 100, 4, 4, 64}, {70, 0}, 2.5f},    // MHA, padding past the first tile, sharp rows
      {{1, 64, 2, 1, 128}, {0}, 2.5f},        // one exact tile, GQA 2 with NKV = 1
      {{2, 37, 4, 2, 24}, {3, 0}, 1.0f},      // SIMT path (HS 24)
  };
  for (const Case& c : cases) {
    const Shape& s = c.s;
    CAPTURE(s.T);
    CAPTURE(s.HS);
    BackendFixture cpu(DeviceKind::CPU, Precision::F32);
    const auto qkv = bf16_rounded(randn(size_t(s.qkv_numel()), 401, c.scale));  // what both sides see
    const auto dout = bf16_rounded(randn(size_t(s.out_numel()), 402));
    const auto mask = left_padded_mask(s, c.pads);
    const Outputs want = run_attention(cpu, DType::F32, s, qkv, dout, mask);
    const Outputs got = run_attention(*gpu, DType::BF16, s, qkv, dout, mask);

    // Measured on the emulated device over these cases (bf16 inputs and outputs, P and dS rounded to
    // bf16 for the second product, f32 accumulation): rel_l2 of out <= 1.9e-3, of dq, dk, dv <=
    // 5.1e-3; max abs error / max |ref| <= 2.9e-3 (out), 5.6e-3 (dq, dk, dv); lse max abs error
    // 1.9e-6. Bounds: about 3x those; lse 1e-4 leaves room for a GPU's own accumulation rounding.
    CHECK(rel_l2(got.out, want.out) < 5e-3);
    check_close(got.out, want.out, 1e-2 * max_abs(want.out), 0, "out");
    check_lse(got.lse, want.lse, 1e-4, "lse");
    const char* names[3] = {"dq", "dk", "dv"};
    for (int part = 0; part < 3; ++part) {
      const auto g = qkv_part(got.dqkv, s, part), w = qkv_part(want.dqkv, s, part);
      CHECK_MESSAGE(rel_l2(g, w) < 1.5e-2, names[part], " rel_l2 ", rel_l2(g, w));
      check_close(g, w, 2e-2 * max_abs(w), 0, names[part]);
    }
    // Left padding: a padded query sees no key (out 0, lse -inf) and a padded key is seen by no
    // query, so the whole dqkv row is 0 -- exactly.
    const int64_t OW = int64_t(s.NH) * s.HS;
    int64_t nonzero = 0;
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t t = 0; t < c.pads[size_t(b)]; ++t) {
        for (int64_t i = 0; i < OW; ++i) nonzero += got.out[size_t((b * s.T + t) * OW + i)] != 0.0f;
        for (int64_t i = 0; i < s.width(); ++i) nonzero += got.dqkv[size_t((b * s.T + t) * s.width() + i)] != 0.0f;
      }
    CHECK_MESSAGE(nonzero == 0, nonzero, " nonzero out or dqkv entries at padded positions");

    const Outputs again = run_attention(*gpu, DType::BF16, s, qkv, dout, mask);
    CHECK(again.out == got.out);  // deterministic: bitwise equal
    CHECK(again.lse == got.lse);
    CHECK(again.dqkv == got.dqkv);
  }
}
