// The `ppo` command line: one subcommand per job.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "engine/communicator.h"
#include "engine/device_memory.h"
#include "engine/error.h"
#include "kernels/backend.h"
#include "tools/ppo/commands.h"

int main(int argc, char** argv) {
  ppo::use_passive_cpu_threads(argv);  // idle OpenMP threads sleep (kernels/backend.h)
  // Launched by mpirun: MPI first, so that an error anywhere ends every rank (abort_ranks).
  const ppo::ProcessGroup world = ppo::ProcessGroup::world();
  if (world.rank > 0) std::freopen("/dev/null", "w", stdout);  // rank 0 reports; every rank its errors (stderr)
  CLI::App app{"ppo: PPO for RLHF on language models, in C++/CUDA with no deep-learning framework"};
  app.require_subcommand(1);
  ppo::tools::add_version_command(app);
  ppo::tools::add_plan_command(app);
  ppo::tools::add_tokenize_command(app);
  ppo::tools::add_export_command(app);
  ppo::tools::add_bench_command(app);
  ppo::tools::add_train_command(app);
  ppo::tools::add_plot_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {  // a ppo::Error, or the standard library's (a filesystem call, an allocation)
    if (world.size > 1) {              // the other ranks would wait for this one forever: end them all
      std::fprintf(stderr, "error (rank %d of %d): %s\n", world.rank, world.size, e.what());
      std::fflush(stderr);
      ppo::abort_ranks(1);
    }
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
