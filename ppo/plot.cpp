#include "ppo/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include "engine/error.h"

namespace ppo {

namespace {

std::string escape_xml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string fmt(const char* format, double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

// Tick label: short, no trailing noise ("0.05", "1e+03", "200").
std::string tick_label(double v) { return fmt("%.3g", std::fabs(v) < 1e-12 ? 0.0 : v); }

struct Point {
  double x, y;
};

// A curve as polylines split at missing values.
struct Line {
  std::string label;  // legend entry ("": none)
  std::vector<std::vector<Point>> segments;
};

// Colours of the curves, in order (matplotlib's tab10).
const char* const kColors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

// The (step, value) points of `metric` over `rows` (x: the `step` column, or the row index).
Line line_of(const std::vector<MetricsRow>& rows, const std::string& metric, const std::string& label) {
  Line line{label, std::vector<std::vector<Point>>(1)};
  for (size_t r = 0; r < rows.size(); ++r) {
    const double x = rows[r].has(metric::kStep) ? rows[r].get(metric::kStep) : double(r);
    const double y = rows[r].get(metric);
    if (std::isfinite(x) && std::isfinite(y)) line.segments.back().push_back({x, y});
    else if (!line.segments.back().empty()) line.segments.emplace_back();
  }
  if (line.segments.back().empty()) line.segments.pop_back();
  return line;
}

// One panel at (left, top): frame, ticks, labels, each line in its colour, a legend for labelled ones.
void render_panel(std::string& svg, const std::string& name, const std::vector<Line>& lines, double left, double top,
                  double width, double height) {
  const double ml = 52, mr = 12, mt = 24, mb = 30;  // margins for tick labels and the title
  const double x0 = left + ml, x1 = left + width - mr, y0 = top + height - mb, y1 = top + mt;
  svg += "<g class=\"panel\" data-metric=\"" + escape_xml(name) + "\">\n";
  svg += "<text x=\"" + fmt("%.1f", (x0 + x1) / 2) + "\" y=\"" + fmt("%.1f", top + 16) +
         "\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">" + escape_xml(name) + "</text>\n";
  svg += "<rect x=\"" + fmt("%.1f", x0) + "\" y=\"" + fmt("%.1f", y1) + "\" width=\"" + fmt("%.1f", x1 - x0) +
         "\" height=\"" + fmt("%.1f", y0 - y1) + "\" fill=\"none\" stroke=\"#444\"/>\n";
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const Line& line : lines)
    for (const auto& seg : line.segments)
      for (const Point& p : seg) {
        xmin = std::min(xmin, p.x), xmax = std::max(xmax, p.x);
        ymin = std::min(ymin, p.y), ymax = std::max(ymax, p.y);
      }
  if (!(xmin <= xmax)) {
    svg += "<text x=\"" + fmt("%.1f", (x0 + x1) / 2) + "\" y=\"" + fmt("%.1f", (y0 + y1) / 2) +
           "\" text-anchor=\"middle\" font-size=\"12\" fill=\"#888\">no data</text>\n</g>\n";
    return;
  }
  // Degenerate ranges (one point, a constant curve) get a unit-wide window around the value.
  if (xmax - xmin < 1e-12) xmin -= 0.5, xmax += 0.5;
  if (ymax - ymin < 1e-12 * std::max(1.0, std::fabs(ymax))) ymin -= 0.5, ymax += 0.5;
  const std::vector<double> xt = nice_ticks(xmin, xmax, 5), yt = nice_ticks(ymin, ymax, 4);
  xmin = std::min(xmin, xt.front()), xmax = std::max(xmax, xt.back());
  ymin = std::min(ymin, yt.front()), ymax = std::max(ymax, yt.back());
  auto px = [&](double x) { return x0 + (x - xmin) / (xmax - xmin) * (x1 - x0); };
  auto py = [&](double y) { return y0 - (y - ymin) / (ymax - ymin) * (y0 - y1); };
  for (double t : xt) {
    const std::string x = fmt("%.1f", px(t));
    svg += "<line x1=\"" + x + "\" y1=\"" + fmt("%.1f", y0) + "\" x2=\"" + x + "\" y2=\"" + fmt("%.1f", y0 + 4) +
           "\" stroke=\"#444\"/><text x=\"" + x + "\" y=\"" + fmt("%.1f", y0 + 16) +
           "\" text-anchor=\"middle\" font-size=\"10\">" + tick_label(t) + "</text>\n";
  }
  for (double t : yt) {
    const std::string y = fmt("%.1f", py(t));
    svg += "<line x1=\"" + fmt("%.1f", x0 - 4) + "\" y1=\"" + y + "\" x2=\"" + fmt("%.1f", x1) + "\" y2=\"" + y +
           "\" stroke=\"#ddd\"/><text x=\"" + fmt("%.1f", x0 - 6) + "\" y=\"" + fmt("%.1f", py(t) + 3.5) +
           "\" text-anchor=\"end\" font-size=\"10\">" + tick_label(t) + "</text>\n";
  }
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string color = kColors[i % std::size(kColors)];
    for (const auto& seg : lines[i].segments) {
      if (seg.size() == 1) {
        svg += "<circle cx=\"" + fmt("%.2f", px(seg[0].x)) + "\" cy=\"" + fmt("%.2f", py(seg[0].y)) +
               "\" r=\"2\" fill=\"" + color + "\"/>\n";
        continue;
      }
      svg += "<polyline fill=\"none\" stroke=\"" + color + "\" stroke-width=\"1.5\" points=\"";
      for (const Point& p : seg) svg += fmt("%.2f", px(p.x)) + "," + fmt("%.2f", py(p.y)) + " ";
      svg += "\"/>\n";
    }
    if (lines[i].label.empty()) continue;
    const double ly = y1 + 12 + 14 * double(i);  // legend: top left inside the frame
    svg += "<line x1=\"" + fmt("%.1f", x0 + 8) + "\" y1=\"" + fmt("%.1f", ly - 4) + "\" x2=\"" + fmt("%.1f", x0 + 26) +
           "\" y2=\"" + fmt("%.1f", ly - 4) + "\" stroke=\"" + color + "\" stroke-width=\"2\"/><text x=\"" +
           fmt("%.1f", x0 + 30) + "\" y=\"" + fmt("%.1f", ly) + "\" font-size=\"11\">" + escape_xml(lines[i].label) +
           "</text>\n";
  }
  svg += "<text x=\"" + fmt("%.1f", (x0 + x1) / 2) + "\" y=\"" + fmt("%.1f", top + height - 2) +
         "\" text-anchor=\"middle\" font-size=\"10\" fill=\"#555\">step</text>\n</g>\n";
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int count) {
  PPO_ASSERT(hi > lo && count > 0, "nice_ticks: empty range [", lo, ", ", hi, "]");
  const double raw = (hi - lo) / count, power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * power;
  for (double m : {1.0, 2.0, 5.0})
    if (m * power >= raw) {
      step = m * power;
      break;
    }
  std::vector<double> ticks;
  for (double t = std::floor(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push_back(t);
  if (ticks.back() < hi) ticks.push_back(ticks.back() + step);
  return ticks;
}

namespace {

// The document with its title; panels go between header and "</svg>".
std::string svg_header(double width, double height, const std::string& title) {
  std::string svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
                    fmt("%.0f", width) + "\" height=\"" + fmt("%.0f", height) + "\" viewBox=\"0 0 " +
                    fmt("%.0f", width) + " " + fmt("%.0f", height) + "\" font-family=\"sans-serif\">\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += "<text x=\"" + fmt("%.1f", width / 2) + "\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">" +
         escape_xml(title) + "</text>\n";
  return svg;
}

constexpr double kTitleHeight = 30;

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  PPO_ASSERT(out.good(), "plot file '", path, "' cannot be opened for writing");
  out << text;
  PPO_ASSERT(out.good(), "plot file '", path, "': write failed");
}

}  // namespace

std::string render_svg(const std::vector<MetricsRow>& rows, const std::vector<std::string>& metrics,
                       const PlotOptions& o) {
  PPO_ASSERT(!metrics.empty(), "plot: no metrics named");
  const int n = int(metrics.size()), cols = std::max(1, std::min(o.columns, n)), nrows = (n + cols - 1) / cols;
  std::string svg = svg_header(cols * o.panel_width, kTitleHeight + nrows * o.panel_height, o.title);
  for (int i = 0; i < n; ++i)
    render_panel(svg, metrics[size_t(i)], {line_of(rows, metrics[size_t(i)], "")}, double(i % cols) * o.panel_width,
                 kTitleHeight + double(i / cols) * o.panel_height, o.panel_width, o.panel_height);
  return svg + "</svg>\n";
}

std::string render_overlay_svg(const std::vector<Curve>& curves, const std::string& metric, const PlotOptions& o) {
  PPO_ASSERT(!curves.empty(), "plot: no curves");
  std::vector<Line> lines;
  for (const Curve& c : curves) lines.push_back(line_of(c.rows, metric, c.label));
  std::string svg = svg_header(o.panel_width, kTitleHeight + o.panel_height, o.title);
  render_panel(svg, metric, lines, 0, kTitleHeight, o.panel_width, o.panel_height);
  return svg + "</svg>\n";
}

void write_svg(const std::string& path, const std::vector<MetricsRow>& rows, const std::vector<std::string>& metrics,
               const PlotOptions& options) {
  write_file(path, render_svg(rows, metrics, options));
}

void write_overlay_svg(const std::string& path, const std::vector<Curve>& curves, const std::string& metric,
                       const PlotOptions& options) {
  write_file(path, render_overlay_svg(curves, metric, options));
}

}  // namespace ppo
