// First header of every .cu file in an emulated-device build (-include): the CUDA qualifiers as the
// host compiler should read them, then the CUDA headers, then the device side of the emulator.
// The qualifiers come first: crt/host_defines.h keeps definitions it finds (and would otherwise
// make __shared__ empty, turning shared arrays into per-thread locals).
#pragma once
#define PPO_CUDA_EMU_DEVICE_CODE 1

#define __global__
#define __device__
#define __host__
#define __shared__ static  // one object per block: the blocks of a launch run one after another
#define __constant__ static
#define __launch_bounds__(...)

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/emu/device.h"
