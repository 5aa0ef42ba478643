// Sampling one token per row of logits(B,V) at temperature 1/inv_temperature, with top-k and top-p.
//   z = logits * inv_temperature;  p = softmax(z)
//   rank tokens by p descending, ties by lower id; top_k > 0 keeps the first k;  top_p < 1 then
//   keeps the shortest prefix of that ranking whose mass, renormalized over the top-k set, reaches
//   top_p (the order of filters used by Hugging Face: top-k, then top-p on what is left).
//   u = uniform_from_bits(philox_draw(seed, stream + b, 0).v[0]);  the token is the first kept id
//   (in id order) whose cumulative kept mass exceeds u * (total kept mass).
//   logp = log p[token] of the full tempered distribution (not renormalized over the kept set).
// The kept set needs no index sort: it is every token with z above a threshold value z* plus the
// lowest-id tokens with z == z*, both found from a copy of z sorted by value (the scratch row).
#include <algorithm>
#include <cmath>
#include <functional>
#include "engine/philox.h"
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void sample_tokens(int32_t* tokens, T* logp, const T* logits, int64_t B, int64_t V, float inv_temperature, int top_k, float top_p, uint64_t seed, uint64_t stream, T* scratch) {
  const bool filtered = (top_k > 0 && top_k < V) || top_p < 1.0f;
  for (int64_t b = 0; b < B; ++b) {  // one row at a time: the scratch holds one sorted row
    const T* row = logits + b * V;
    auto z = [&](int64_t v) { return double(T(row[v] * T(inv_temperature))); };
    // full tempered distribution: p_v = exp(z_v - max) / sum
    double max_z = z(0);
    for (int64_t v = 1; v < V; ++v) max_z = std::max(max_z, z(v));
    double sum_e = 0;
    for (int64_t v = 0; v < V; ++v) sum_e += std::exp(z(v) - max_z);
    auto prob = [&](int64_t v) { return std::exp(z(v) - max_z) / sum_e; };

    // Kept set: z > z_star, plus the first `ties_kept` ids (in id order) with z == z_star.
    double z_star = -INFINITY;
    int64_t ties_kept = V;
    if (filtered) {
      T* sorted = scratch;
      for (int64_t v = 0; v < V; ++v) sorted[v] = T(z(v));
      std::sort(sorted, sorted + V, std::greater<T>());
      const int64_t K = top_k > 0 ? std::min<int64_t>(top_k, V) : V;
      double mass_k = 0;  // mass of the top-k set
      for (int64_t i = 0; i < K; ++i) mass_k += std::exp(double(sorted[i]) - max_z) / sum_e;
      int64_t m = K;  // kept prefix length of the ranking
      if (top_p < 1.0f) {
        double cum = 0;
        for (int64_t i = 0; i < K; ++i) {
          cum += std::exp(double(sorted[i]) - max_z) / sum_e;
          if (cum >= double(top_p) * mass_k) {
            m = i + 1;
            break;
          }
        }
      }
      z_star = double(sorted[m - 1]);
      ties_kept = m;
      for (int64_t i = 0; i < m; ++i)
        if (double(sorted[i]) > z_star) --ties_kept;
    }
    // The kept tokens in id order; `visit(v, p)` is called for each.
    auto for_each_kept = [&](auto&& visit) {
      int64_t ties_seen = 0;
      for (int64_t v = 0; v < V; ++v) {
        const double zv = z(v);
        if (zv < z_star || (zv == z_star && ties_seen++ >= ties_kept)) continue;
        if (visit(v, prob(v))) return;
      }
    };
    double kept_mass = 0;
    int64_t last_kept = 0;
    for_each_kept([&](int64_t v, double p) {
      kept_mass += p;
      last_kept = v;
      return false;
    });
    // inverse CDF over the kept tokens in id order (the last kept token if rounding leaves a gap)
    const double target = double(uniform_from_bits(philox_draw(seed, stream + uint64_t(b), 0).v[0])) * kept_mass;
    int64_t token = last_kept;
    double cum = 0;
    for_each_kept([&](int64_t v, double p) {
      cum += p;
      if (cum > target) {
        token = v;
        return true;
      }
      return false;
    });
    tokens[b] = int32_t(token);
    logp[b] = T(z(token) - max_z - std::log(sum_e));
  }
}

PPO_CPU_INSTANTIATE(sample_tokens)

}  // namespace ppo::cpu
