// Metrics JSONL (round trip, names, NaN as null, append on resume), the progress line, and the SVG
// small multiple.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include "engine/error.h"
#include "ppo/metrics.h"
#include "ppo/plot.h"

using namespace ppo;

static size_t count_of(const std::string& s, const std::string& part) {
  size_t n = 0;
  for (size_t at = s.find(part); at != std::string::npos; at = s.find(part, at + 1)) ++n;
  return n;
}

static MetricsRow row_at(int step) {
  MetricsRow r;
  r.set(metric::kStep, step);
  r.set(metric::kKl, 0.01 * step);
  r.set(metric::kRlhfReward, -0.5 + 0.125 * step);
  r.set(metric::kPolicyClipfrac, step == 2 ? NAN : 0.03);
  r.set(metric::kTrainSeconds, 1.25);
  return r;
}

TEST_CASE("metrics JSONL: one flushed object per line, round trip, NaN as null") {
  const std::string path = "test_metrics.jsonl";
  {
    MetricsLogger log(path, LogMode::Truncate);
    for (int s = 1; s <= 3; ++s) {
      log.write(row_at(s));
      CHECK(read_metrics_jsonl(path).size() == size_t(s));  // flushed: readable while the run goes
    }
  }
  {
    MetricsLogger log(path, LogMode::Append);  // a resumed run continues the file
    log.write(row_at(4));
  }
  std::ifstream in(path);
  std::string first;
  std::getline(in, first);
  CHECK(first == "{\"step\":1,\"objective/kl\":0.01,\"objective/rlhf_reward\":-0.375,\"policy/clipfrac_avg\":0.03,"
                 "\"time/train_s\":1.25}");
  const auto rows = read_metrics_jsonl(path);
  REQUIRE(rows.size() == 4);
  for (int s = 1; s <= 4; ++s) {
    const MetricsRow want = row_at(s);
    const MetricsRow& got = rows[size_t(s - 1)];
    REQUIRE(got.items().size() == want.items().size());
    for (size_t i = 0; i < want.items().size(); ++i) {
      CHECK(got.items()[i].first == want.items()[i].first);  // names and order kept
      const double w = want.items()[i].second, g = got.items()[i].second;
      CHECK_MESSAGE((std::isnan(w) ? std::isnan(g) : g == w), want.items()[i].first, " at step ", s);
    }
  }
  CHECK(std::isnan(rows[0].get("no/such_metric")));
  MetricsLogger(path, LogMode::Truncate);  // truncates
  CHECK(read_metrics_jsonl(path).empty());
  std::remove(path.c_str());
  CHECK_THROWS_AS(read_metrics_jsonl("no_such_file.jsonl"), Error);
}

TEST_CASE("MetricsRow::set replaces an existing name") {
  MetricsRow r;
  r.set("lr", 1e-5);
  r.set("lr", 2e-5);
  CHECK(r.items().size() == 1);
  CHECK(r.get("lr") == 2e-5);
}

TEST_CASE("progress line: step, key metrics, s/step, ETA") {
  MetricsRow r;
  r.set(metric::kRlhfReward, 0.53125);
  r.set(metric::kKl, 0.0123);
  const std::string line = format_progress(12, 200, 1.5, r);
  CHECK(line.rfind("step 12/200", 0) == 0);
  CHECK(line.find("rlhf_reward 0.5312") != std::string::npos);
  CHECK(line.find("kl 0.0123") != std::string::npos);
  CHECK(line.find("1.5 s/step") != std::string::npos);
  CHECK(line.find("ETA 4m42s") != std::string::npos);  // 188 steps * 1.5 s = 282 s
  CHECK(line.find("clipfrac") == std::string::npos);   // absent metrics are not shown
  CHECK(format_duration(45) == "45s");
  CHECK(format_duration(3 * 3600 + 5 * 60 + 9) == "3h05m");
  CHECK(format_duration(NAN) == "?");
}

TEST_CASE("SVG plot: one panel per metric with axes, ticks and labels") {
  std::vector<MetricsRow> rows;
  for (int s = 1; s <= 20; ++s) rows.push_back(row_at(s));
  const std::vector<std::string> names = {metric::kRlhfReward, metric::kKl, metric::kPolicyClipfrac,
                                          metric::kTrainSeconds, "missing/metric"};
  const std::string path = "test_metrics_plot.svg";
  write_svg(path, rows, names, PlotOptions{"demo <run>", 2, 300, 200});
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string svg = ss.str();
  std::remove(path.c_str());
  CHECK(svg.rfind("<?xml", 0) == 0);
  CHECK(svg.find("</svg>") != std::string::npos);
  CHECK(svg.find("demo &lt;run&gt;") != std::string::npos);  // escaped title
  CHECK(count_of(svg, "class=\"panel\"") == names.size());
  for (const std::string& n : names) CHECK(svg.find("data-metric=\"" + n + "\"") != std::string::npos);
  // clipfrac has a NaN at step 2: its curve splits into a dot (step 1) and a line (steps 3..20);
  // reward, kl and time are one line each; the missing metric says "no data".
  CHECK(count_of(svg, "<polyline") == 4);
  CHECK(count_of(svg, "<circle") == 1);
  CHECK(count_of(svg, "no data") == 1);
  // 3 columns x 2 rows of 300 x 200 with the 30-pixel title: 600 x 630.
  CHECK(svg.find("width=\"600\" height=\"630\"") != std::string::npos);
  // Tick labels: reward runs from -0.375 to 2; nice ticks at 0.5 spacing include "-0.5" and "2".
  CHECK(svg.find(">-0.5</text>") != std::string::npos);
  CHECK(svg.find(">2</text>") != std::string::npos);
  CHECK(svg.find(">step</text>") != std::string::npos);
}

TEST_CASE("overlay SVG: one panel, a coloured line and a legend entry per run") {
  std::vector<Curve> curves(3);
  for (int s = 1; s <= 10; ++s) {
    MetricsRow r = row_at(s);
    curves[0].rows.push_back(r);
    r.set(metric::kRlhfReward, r.get(metric::kRlhfReward) + 1.0);
    curves[1].rows.push_back(r);
  }
  curves[0].label = "ppo", curves[1].label = "grpo & co", curves[2].label = "empty";
  const std::string svg = render_overlay_svg(curves, metric::kRlhfReward, PlotOptions{"gold", 1, 400, 300});
  CHECK(count_of(svg, "class=\"panel\"") == 1);
  CHECK(count_of(svg, "<polyline") == 2);
  CHECK(count_of(svg, "stroke=\"#1f77b4\"") == 2);  // the first run's line and legend mark
  CHECK(count_of(svg, "stroke=\"#ff7f0e\"") == 2);
  CHECK(svg.find(">grpo &amp; co</text>") != std::string::npos);
  CHECK(svg.find(">empty</text>") != std::string::npos);  // a run with no values keeps its legend entry
  CHECK(svg.find("width=\"400\" height=\"330\"") != std::string::npos);
  CHECK_THROWS_AS(render_overlay_svg({}, metric::kKl), Error);
}

TEST_CASE("nice ticks: 1-2-5 steps covering the range") {
  const auto t = nice_ticks(0.13, 0.87, 4);  // raw step 0.185 -> 0.2: 0 0.2 .. 1
  REQUIRE(t.size() == 6);
  CHECK(t[1] == doctest::Approx(0.2));
  CHECK(t.front() == doctest::Approx(0.0));
  CHECK(t.back() == doctest::Approx(1.0));
  const auto u = nice_ticks(1, 20, 5);  // raw 3.8 -> 5: 0 5 10 15 20
  CHECK(u.size() == 5);
  CHECK(u.back() == doctest::Approx(20));
  CHECK_THROWS_AS(nice_ticks(1, 1, 4), Error);
}
