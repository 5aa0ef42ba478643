// `ppo version`: build information and the devices this machine offers.
#include <cstdio>
#include "engine/device_memory.h"
#include "tools/ppo/commands.h"

namespace ppo::tools {

void add_version_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("version", "Print build information (CUDA, archs, BLAS) and the device found");
  cmd->callback([] {
    std::printf("ppo-engine %s\n", PPO_VERSION);
    std::printf("cuda: %s\n", cuda_emulated()   ? "emulated (kernels/cuda/emu: the CUDA sources run on the cpu)"
                              : cuda_compiled() ? "compiled"
                                                : "not compiled");
    std::printf("cuda archs: %s\n", cuda_compiled() && !cuda_emulated() ? PPO_CUDA_ARCHS_STR : "-");
    std::printf("cpu blas: OpenBLAS; threads: OpenMP\n");
    const int n = cuda_device_count();
    if (n > 0) std::printf("gpu: %d found, device 0: %s\n", n, cuda_device_name().c_str());
    else std::printf("gpu: none found (--device auto runs on the cpu)\n");
  });
}

}  // namespace ppo::tools
