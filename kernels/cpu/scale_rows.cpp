// x[b,t] *= row_scale[b]   x (B,T), row_scale (B)
#include "kernels/cpu/ops.h"

namespace ppo::cpu {

template <class T> void scale_rows(T* x, const T* row_scale, int64_t B, int64_t T_) {
#pragma omp parallel for if(worth_threads(B * T_))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T_; ++t) x[b * T_ + t] *= row_scale[b];
}

PPO_CPU_INSTANTIATE(scale_rows)

}  // namespace ppo::cpu
