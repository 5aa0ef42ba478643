// Subcommands of the `ppo` program; each add_* registers one on the app.
#pragma once
#include <CLI/CLI.hpp>

namespace ppo::tools {

void add_version_command(CLI::App& app);
void add_plan_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_plot_command(CLI::App& app);

}  // namespace ppo::tools
