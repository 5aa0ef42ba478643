// `ppo plot --metric NAME --curve LABEL=FILE[,FILE...] ... --out OUT.svg`: one metric of several
// runs overlaid in one SVG panel (ppo/plot.h), a line per label; a label with several metrics.jsonl
// files (seeds) draws their mean at each step all of them logged.
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include "engine/error.h"
#include "ppo/plot.h"
#include "tools/ppo/commands.h"

namespace ppo::tools {

namespace {
struct PlotCommandOptions {
  std::string metric = metric::kGoldScores, out, title;
  std::vector<std::string> curves;
};

// The mean of `metric` per step over the files' rows: steps every file logged a finite value of.
std::vector<MetricsRow> mean_per_step(const std::vector<std::string>& files, const std::string& name) {
  std::map<double, std::pair<double, size_t>> sums;  // step -> (sum, files)
  for (const std::string& f : files)
    for (const MetricsRow& row : read_metrics_jsonl(f))
      if (std::isfinite(row.get(name))) {
        auto& [sum, count] = sums[row.get(metric::kStep)];
        sum += row.get(name), count += 1;
      }
  std::vector<MetricsRow> rows;
  for (const auto& [step, sc] : sums) {
    if (sc.second != files.size()) continue;
    rows.emplace_back();
    rows.back().set(metric::kStep, step);
    rows.back().set(name, sc.first / double(sc.second));
  }
  return rows;
}

void run_plot(const PlotCommandOptions& o) {
  std::vector<Curve> curves;
  for (const std::string& c : o.curves) {
    const size_t eq = c.find('=');
    PPO_ASSERT(eq != std::string::npos && eq > 0 && eq + 1 < c.size(), "--curve ", c, ": expected LABEL=FILE[,FILE...]");
    std::vector<std::string> files;
    for (size_t start = eq + 1; start <= c.size();) {
      const size_t comma = std::min(c.find(',', start), c.size());
      files.push_back(c.substr(start, comma - start));
      start = comma + 1;
    }
    curves.push_back({c.substr(0, eq), mean_per_step(files, o.metric)});
  }
  write_overlay_svg(o.out, curves, o.metric, {o.title.empty() ? o.metric : o.title, 1, 640, 400});
  std::printf("wrote %s (%zu curves of %s)\n", o.out.c_str(), curves.size(), o.metric.c_str());
}
}  // namespace

void add_plot_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("plot", "Overlay one metric of several runs (metrics.jsonl) in one SVG");
  auto o = std::make_shared<PlotCommandOptions>();
  cmd->add_option("--metric", o->metric, "the metric (default objective/gold_scores)");
  cmd->add_option("--curve", o->curves, "LABEL=FILE[,FILE...]: a line; several files (seeds) give their mean")
      ->required();
  cmd->add_option("--out", o->out, "the SVG to write")->required();
  cmd->add_option("--title", o->title, "the plot's title (default: the metric)");
  cmd->callback([o] { run_plot(*o); });
}

}  // namespace ppo::tools
