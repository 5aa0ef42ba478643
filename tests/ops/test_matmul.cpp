// matmul_forward / matmul_backward: against a plain double loop, finite differences in f64, the
// "=" / "+=" rule and optional arguments, input validation, and CUDA against CPU.
#include "helpers.h"

#include <omp.h>
#include <array>
#include "engine/dtype.h"
#include "fd_check.h"
#include "kernels/cpu/blas.h"

using namespace ppo;
using namespace ppo::test;

namespace {

constexpr int64_t B = 3, T = 7, N = B * T, C = 24, OC = 37;

// out[n,o] = sum_c inp[n,c] weight[o,c] + bias[o], in double.
std::vector<float> matmul_reference(const std::vector<float>& inp, const std::vector<float>& weight,
                                    const std::vector<float>* bias) {
  std::vector<float> out(size_t(N * OC));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o) {
      double acc = bias ? (*bias)[size_t(o)] : 0.0;
      for (int64_t c = 0; c < C; ++c) acc += double(inp[size_t(n * C + c)]) * weight[size_t(o * C + c)];
      out[size_t(n * OC + o)] = float(acc);
    }
  return out;
}

}  // namespace

TEST_CASE("matmul_forward matches the plain double loop, (B,T,C) input, with and without bias") {
  const std::vector<float> x_h = randn(N * C, 1), w_h = randn(OC * C, 2, 0.3f), b_h = randn(OC, 3);
  for (Precision p : {Precision::F32, Precision::F64}) {
    BackendFixture f(DeviceKind::CPU, p);
    const DType dt = f.backend->act_dtype();
    CAPTURE(dtype_name(dt));
    Tensor inp = f.upload(x_h, dt, {B, T, C}, "inp");
    Tensor weight = f.upload(w_h, dt, {OC, C}, "weight"), bias = f.upload(b_h, dt, {OC}, "bias");
    // f32: 24-term dot products of O(1) values, each rounding ~6e-8 relative; f64 is near exact.
    const double tol = p == Precision::F32 ? 1e-5 : 1e-12;
    for (bool with_bias : {true, false}) {
      CAPTURE(with_bias);
      Tensor out = f.poisoned(dt, {B, T, OC}, "out");
      f.backend->matmul_forward(out, inp, weight, with_bias ? bias : Tensor{});
      check_close(f.backend->to_host(out), matmul_reference(x_h, w_h, with_bias ? &b_h : nullptr), tol, tol, "out");
    }
  }
}

TEST_CASE("matmul_backward matches finite differences in f64: dinp =, dweight and dbias +=") {
  BackendFixture f(DeviceKind::CPU, Precision::F64);
  Tensor inp = f.upload(randn(N * C, 11), DType::F64, {N, C}, "inp");
  Tensor weight = f.upload(randn(OC * C, 12, 0.3f), DType::F64, {OC, C}, "weight");
  Tensor bias = f.upload(randn(OC, 13), DType::F64, {OC}, "bias");
  Tensor out = f.pool->take(DType::F64, {N, OC}, "out");
  const std::vector<float> w = randn(N * OC, 14);  // L = sum(out * w), so dout = w
  auto loss = [&] {
    f.backend->matmul_forward(out, inp, weight, bias);
    return weighted_sum(out, w);
  };
  Tensor dout = f.upload(w, DType::F64, {N, OC}, "dout");
  const std::vector<float> dw0 = randn(OC * C, 15), db0 = randn(OC, 16);
  Tensor dinp = f.poisoned(DType::F64, {N, C}, "dinp");  // "=": every element must be written
  Tensor dweight = f.upload(dw0, DType::F64, {OC, C}, "dweight"), dbias = f.upload(db0, DType::F64, {OC}, "dbias");
  f.backend->matmul_backward(dinp, dweight, dbias, dout, inp, weight);

  // L is bilinear, so central differences are exact up to rounding (~1e-16 |L| / h ~ 1e-9 with
  // h = 1e-6); the f32 view adds 6e-8 relative. A transposed or missing term is off by O(1).
  check_close(f64_values(dinp), central_diff(inp, loss), 1e-6, 1e-5, "dinp");
  check_close(minus(f64_values(dweight), dw0), central_diff(weight, loss), 1e-6, 1e-5, "dweight");
  check_close(minus(f64_values(dbias), db0), central_diff(bias, loss), 1e-6, 1e-5, "dbias");

  // Every gradient is optional: each alone gives the same values.
  Tensor dinp2 = f.poisoned(DType::F64, {N, C}, "dinp2");
  f.backend->matmul_backward(dinp2, Tensor{}, Tensor{}, dout, inp, weight);
  check_close(f64_values(dinp2), f64_values(dinp), 0, 0, "dinp alone");
  Tensor dweight2 = f.upload(dw0, DType::F64, {OC, C}, "dweight2"), dbias2 = f.upload(db0, DType::F64, {OC}, "dbias2");
  f.backend->matmul_backward(Tensor{}, dweight2, Tensor{}, dout, inp, weight);
  f.backend->matmul_backward(Tensor{}, Tensor{}, dbias2, dout, inp, weight);
  check_close(f64_values(dweight2), f64_values(dweight), 0, 0, "dweight alone");
  check_close(f64_values(dbias2), f64_values(dbias), 0, 0, "dbias alone");
}

TEST_CASE("matmul split over threads (blocks of rows or of columns) matches the double loops") {
  // Products above kGemmThreadWork are cut into one block per OpenMP thread; 3 threads and odd
  // extents leave a ragged last block. forward: by columns (OC > N) or by rows (N > OC); dinp and
  // dweight the same way.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(3);
  for (const std::array<int64_t, 3>& shape :
       {std::array<int64_t, 3>{37, 211, 301}, std::array<int64_t, 3>{301, 157, 53}}) {
    const int64_t n = shape[0], c = shape[1], oc = shape[2];  // no structured binding: CAPTURE (clang 14)
    CAPTURE(n);
    REQUIRE(n * c * oc >= cpu::kGemmThreadWork);
    BackendFixture f(DeviceKind::CPU, Precision::F32);
    const std::vector<float> x = randn(size_t(n * c), 31), w = randn(size_t(oc * c), 32, 0.3f), g = randn(size_t(n * oc), 33);
    Tensor inp = f.upload(x, DType::F32, {n, c}, "inp"), weight = f.upload(w, DType::F32, {oc, c}, "weight");
    Tensor dout = f.upload(g, DType::F32, {n, oc}, "dout");
    Tensor out = f.poisoned(DType::F32, {n, oc}, "out"), dinp = f.poisoned(DType::F32, {n, c}, "dinp");
    Tensor dweight = f.upload(std::vector<float>(size_t(oc * c), 0.0f), DType::F32, {oc, c}, "dweight");
    f.backend->matmul_forward(out, inp, weight, Tensor{});
    f.backend->matmul_backward(dinp, dweight, Tensor{}, dout, inp, weight);
    std::vector<float> out_ref(size_t(n * oc)), dinp_ref(size_t(n * c)), dw_ref(size_t(oc * c));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < oc; ++o) {
        double acc = 0;
        for (int64_t k = 0; k < c; ++k) acc += double(x[size_t(i * c + k)]) * w[size_t(o * c + k)];
        out_ref[size_t(i * oc + o)] = float(acc);
      }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < c; ++k) {
        double acc = 0;
        for (int64_t o = 0; o < oc; ++o) acc += double(g[size_t(i * oc + o)]) * w[size_t(o * c + k)];
        dinp_ref[size_t(i * c + k)] = float(acc);
      }
    for (int64_t o = 0; o < oc; ++o)
      for (int64_t k = 0; k < c; ++k) {
        double acc = 0;
        for (int64_t i = 0; i < n; ++i) acc += double(g[size_t(i * oc + o)]) * x[size_t(i * c + k)];
        dw_ref[size_t(o * c + k)] = float(acc);
      }
    // f32 sums of up to 301 products of O(1) values: ~1e-6 relative each, ~1e-5 absolute.
    check_close(f.backend->to_host(out), out_ref, 1e-4, 1e-4, "out");
    check_close(f.backend->to_host(dinp), dinp_ref, 1e-4, 1e-4, "dinp");
    check_close(f.backend->to_host(dweight), dw_ref, 1e-4, 1e-4, "dweight");
  }
  omp_set_num_threads(threads);
}

TEST_CASE("matmul rejects bad inputs, naming the argument") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  Tensor inp = f.upload(randn(N * C, 21), DType::F32, {N, C}, "inp");
  Tensor weight = f.upload(randn(OC * C, 22), DType::F32, {OC, C}, "weight");
  Tensor out = f.pool->take(DType::F32, {N, OC}, "out");
  Tensor wide = f.pool->take(DType::F32, {OC, C + 1}, "wide");
  CHECK_THROWS_WITH_AS(f.backend->matmul_forward(out, inp, wide, Tensor{}), doctest::Contains("'weight'"), Error);
  Tensor bias_short = f.pool->take(DType::F32, {OC - 1}, "bias_short");
  CHECK_THROWS_WITH_AS(f.backend->matmul_forward(out, inp, weight, bias_short), doctest::Contains("'bias'"), Error);
  Tensor inp64 = f.pool->take(DType::F64, {N, C}, "inp64");
  CHECK_THROWS_WITH_AS(f.backend->matmul_forward(out, inp64, weight, Tensor{}), doctest::Contains("'inp'"), Error);
  Tensor dweight_t = f.pool->take(DType::F32, {C, OC}, "dweight_t");
  CHECK_THROWS_WITH_AS(f.backend->matmul_backward(Tensor{}, dweight_t, Tensor{}, out, inp, weight),
                       doctest::Contains("'dweight'"), Error);
}

TEST_CASE("matmul: CUDA matches CPU") {
  auto gpu = cuda_backend_or_skip();
  if (!gpu) return;
  BackendFixture cpu(DeviceKind::CPU, Precision::F32);
  // Sizes past one tile in every direction, none a multiple of 8 (the cuBLAS fallbacks); then sizes
  // cuBLASLt takes with its BIAS and BGRADB epilogues, twice with another bias (its cached plan
  // must use this call's pointers).
  struct Sizes {
    int64_t N, C, OC;
  };
  for (const Sizes z : {Sizes{133, 200, 150}, Sizes{64, 96, 128}, Sizes{64, 96, 128}}) {
    static uint64_t seed = 30;
    seed += 10;
    CAPTURE(z.N);
    CAPTURE(z.C);
    CAPTURE(z.OC);
    const std::vector<float> x_h = bf16_rounded(randn(z.N * z.C, seed + 1)),
                             w_h = bf16_rounded(randn(z.OC * z.C, seed + 2, 0.1f));
    const std::vector<float> b_h = bf16_rounded(randn(z.OC, seed + 3)), dout_h = bf16_rounded(randn(z.N * z.OC, seed + 4));
    const std::vector<float> dw0 = randn(z.OC * z.C, seed + 5), db0 = randn(z.OC, seed + 6);
    std::vector<float> r[2][4];  // [cuda, cpu][out, dinp, dweight, dbias]
    auto run = [&](auto* fx, std::vector<float>* res) {
      Backend& be = *fx->backend;
      const DType act = be.act_dtype(), grad = be.grad_dtype();
      Tensor inp = fx->upload(x_h, act, {z.N, z.C}, "inp"), weight = fx->upload(w_h, act, {z.OC, z.C}, "weight");
      Tensor bias = fx->upload(b_h, act, {z.OC}, "bias");
      Tensor out = fx->poisoned(act, {z.N, z.OC}, "out");
      be.matmul_forward(out, inp, weight, bias);
      Tensor dout = fx->upload(dout_h, act, {z.N, z.OC}, "dout"), dinp = fx->poisoned(act, {z.N, z.C}, "dinp");
      Tensor dweight = fx->upload(dw0, grad, {z.OC, z.C}, "dweight"), dbias = fx->upload(db0, grad, {z.OC}, "dbias");
      be.matmul_backward(dinp, dweight, dbias, dout, inp, weight);
      res[0] = be.to_host(out);
      res[1] = be.to_host(dinp);
      res[2] = be.to_host(dweight);
      res[3] = be.to_host(dbias);
    };
    run(gpu.get(), r[0]);
    run(&cpu, r[1]);
    const char* names[4] = {"out", "dinp", "dweight", "dbias"};
    for (int i = 0; i < 4; ++i) {
      CAPTURE(names[i]);
      CHECK(rel_l2(r[0][i], r[1][i]) < 2e-2);
    }
  }
}
