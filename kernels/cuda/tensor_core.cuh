// Tensor-core fragments and asynchronous copies as functions: on a GPU the PTX instructions, on
// the emulated device warp collectives with the PTX-ISA fragment layouts (kernels/cuda/emu/device.h),
// so kernels built on them are validated before any GPU sees them.
//   mma_m16n8k16_bf16:  d += a b, A 16x16 row-major (4 regs of 2 bf16), B 16x8 column-major (2 regs),
//                       f32 accumulators (4 per lane); g = lane/4, t = lane%4: A element i at row
//                       g + 8((i>>1)&1), column 2t + (i&1) + 8(i>>2); B element i at k = 2t + (i&1) +
//                       8(i>>1), n = g; C/D element i at row g + 8(i>>1), column 2t + (i&1).
//   ldmatrix_x4[_trans]: lane 8m + r passes row r of 8x8 b16 matrix m (16 bytes, 16-byte aligned, in
//                       shared memory); lane l gets of matrix m row l/4, columns 2(l%4), 2(l%4)+1 in
//                       r[m] (trans: rows 2(l%4), 2(l%4)+1 of column l/4).
//   cp_async16:         16 bytes global -> shared, completed by cp_async_wait<N>() (all but the N most
//                       recently committed groups); zero-filled when !valid (src not read).
#pragma once
#include <cstdint>

#include "engine/dtype.h"

namespace ppo::cuda {

#if defined(PPO_CUDA_EMU_DEVICE_CODE)

inline void cp_async16(void* dst, const void* src, bool valid) { emu::cp_async(dst, src, 16, valid ? 16 : 0); }
inline void cp_async_commit() { emu::cp_async_commit(); }
template <int N>
inline void cp_async_wait() {
  emu::cp_async_wait(N);
}

inline void ldmatrix_x4(uint32_t (&r)[4], const bf16* p, bool trans = false) {
  emu::LaneIn in;
  in.address = p;
  const emu::LaneOut out = emu::warp_collective(trans ? emu::Collective::LdmatrixTrans : emu::Collective::Ldmatrix,
                                                0xffffffffu, PPO_EMU_HERE, in);
  for (int i = 0; i < 4; ++i) r[i] = out.regs[i];
}
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) { ldmatrix_x4(r, p, true); }

inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  emu::LaneIn in;
  for (int i = 0; i < 4; ++i) {
    in.regs[i] = a[i];
    in.acc[i] = d[i];
  }
  in.regs[4] = b0;
  in.regs[5] = b1;
  const emu::LaneOut out = emu::warp_collective(emu::Collective::Mma, 0xffffffffu, PPO_EMU_HERE, in);
  for (int i = 0; i < 4; ++i) d[i] = out.acc[i];
}

#else

__device__ __forceinline__ uint32_t shared_address(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#endif

}  // namespace ppo::cuda
