// Training curves as one self-contained SVG: a small multiple with one panel per metric (x: the
// `step` column, or the row index when absent), each with its own axes, ticks and title; or one
// panel that overlays several runs' curves of one metric.
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

// Several runs' curves of one metric in one panel: a colour and a legend entry per curve.
struct Curve {
  std::string label;
  std::vector<MetricsRow> rows;
};
std::string render_overlay_svg(const std::vector<Curve>& curves, const std::string& metric,
                               const PlotOptions& options = {});
void write_overlay_svg(const std::string& path, const std::vector<Curve>& curves, const std::string& metric,
                       const PlotOptions& options = {});

// "Nice" tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi], about `count`.
std::vector<double> nice_ticks(double lo, double hi, int count);

}  // namespace ppo
