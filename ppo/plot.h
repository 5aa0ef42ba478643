// Training curves as one self-contained SVG: a small multiple with one panel per metric (x: the
// `step` column, or the row index when absent), each with its own axes, ticks and title.
#pragma once
#include <string>
#include <vector>
#include "ppo/metrics.h"

namespace ppo {

struct PlotOptions {
  std::string title = "ppo-engine";
  int columns = 3;             // panels per row
  int panel_width = 320;       // pixels
  int panel_height = 210;
};

// Missing values (absent or NaN) break a curve; a metric with no finite value gets an empty panel
// that says so.
std::string render_svg(const std::vector<MetricsRow>& rows, const std::vector<std::string>& metrics,
                       const PlotOptions& options = {});
void write_svg(const std::string& path, const std::vector<MetricsRow>& rows, const std::vector<std::string>& metrics,
               const PlotOptions& options = {});

// "Nice" tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi], about `count`.
std::vector<double> nice_ticks(double lo, double hi, int count);

}  // namespace ppo
