// Stable radix sort of (key, value) int32 pairs on the device, CUB's DeviceRadixSort::SortPairs
// contract: keys ordered by their bits [begin_bit, end_bit) (as CUB orders signed keys), equal keys
// keep their input order; called once with temp == nullptr to learn temp_bytes, then with that many
// bytes of device scratch. On a GPU this is CUB (radix_sort.cu); on the emulated device a host
// implementation of the same contract (emu/radix_sort.cpp), since CUB's headers need nvcc.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace ppo::cuda {

cudaError_t radix_sort_pairs(void* temp, size_t& temp_bytes, const int32_t* keys_in, int32_t* keys_out,
                             const int32_t* values_in, int32_t* values_out, int n, int begin_bit, int end_bit,
                             cudaStream_t stream);

}  // namespace ppo::cuda
