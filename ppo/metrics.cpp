#include "ppo/metrics.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include "engine/error.h"

namespace ppo {

void MetricsRow::set(const std::string& name, double value) {
  for (auto& item : items_)
    if (item.first == name) {
      item.second = value;
      return;
    }
  items_.emplace_back(name, value);
}

bool MetricsRow::has(const std::string& name) const {
  for (const auto& item : items_)
    if (item.first == name) return true;
  return false;
}

double MetricsRow::get(const std::string& name) const {
  for (const auto& item : items_)
    if (item.first == name) return item.second;
  return NAN;
}

std::string MetricsRow::to_json_line() const {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [name, value] : items_) {
    if (!std::isfinite(value)) j[name] = nullptr;
    else if (value == std::floor(value) && std::fabs(value) < 9e15) j[name] = int64_t(value);  // counts stay integers
    else j[name] = value;
  }
  return j.dump();
}

MetricsLogger::MetricsLogger(const std::string& path, LogMode mode)
    : path_(path), out_(path, mode == LogMode::Append ? std::ios::app : std::ios::trunc) {
  PPO_ASSERT(out_.good(), "metrics file '", path, "' cannot be opened for writing");
}

void MetricsLogger::write(const MetricsRow& row) {
  out_ << row.to_json_line() << '\n';
  out_.flush();
  PPO_ASSERT(out_.good(), "metrics file '", path_, "': write failed");
}

std::vector<MetricsRow> read_metrics_jsonl(const std::string& path) {
  std::ifstream in(path);
  PPO_ASSERT(in.good(), "metrics file '", path, "' cannot be opened");
  std::vector<MetricsRow> rows;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto j = nlohmann::ordered_json::parse(line, nullptr, /*allow_exceptions=*/false);
    PPO_ASSERT(j.is_object(), path, ":", line_no, ": not a JSON object");
    MetricsRow row;
    for (const auto& [name, value] : j.items()) {
      PPO_ASSERT(value.is_number() || value.is_null(), path, ":", line_no, ": '", name, "' is not a number");
      row.set(name, value.is_null() ? NAN : value.get<double>());
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::vector<MetricsRow> keep_metrics_through_step(const std::string& path, int64_t step) {
  std::vector<MetricsRow> rows = read_metrics_jsonl(path);
  rows.erase(std::remove_if(rows.begin(), rows.end(),
                            [&](const MetricsRow& r) { return !r.has(metric::kStep) || r.get(metric::kStep) > double(step); }),
             rows.end());
  const std::string tmp = path + ".tmp";
  {
    MetricsLogger out(tmp, LogMode::Truncate);
    for (const MetricsRow& r : rows) out.write(r);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  PPO_ASSERT(!ec, "metrics file '", path, "': cannot replace it with '", tmp, "': ", ec.message());
  return rows;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = int64_t(std::llround(seconds));
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", (long long)s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  else std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
  return buf;
}

std::string format_progress(int64_t step, int64_t total_steps, double seconds_per_step, const MetricsRow& row) {
  // The few numbers to watch while a run goes: reward up, KL bounded, clipping modest (DPO: loss
  // down, margin and accuracy up).
  static const std::pair<const char*, const char*> shown[] = {
      {metric::kRlhfReward, "rlhf_reward"}, {metric::kScores, "score"}, {metric::kGoldScores, "gold"},
      {metric::kKl, "kl"}, {metric::kPolicyClipfrac, "clipfrac"}, {metric::kValueLoss, "vloss"},
      {metric::kDpoLoss, "loss"}, {metric::kRewardsMargins, "margin"}, {metric::kRewardsAccuracies, "accuracy"}};
  std::string line = "step " + std::to_string(step) + "/" + std::to_string(total_steps);
  char buf[64];
  for (const auto& [name, label] : shown) {
    if (!row.has(name)) continue;
    std::snprintf(buf, sizeof buf, " | %s %.4g", label, row.get(name));
    line += buf;
  }
  std::snprintf(buf, sizeof buf, " | %.3g s/step | ETA ", seconds_per_step);
  line += buf;
  line += format_duration(seconds_per_step * double(total_steps - step));
  return line;
}

ProgressPrinter::ProgressPrinter(int64_t total_steps, int64_t first_step, std::FILE* out)
    : total_steps_(total_steps), first_step_(first_step), out_(out), start_(std::chrono::steady_clock::now()) {}

void ProgressPrinter::print(int64_t step, const MetricsRow& row) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t done = std::max<int64_t>(1, step - first_step_ + 1);
  std::fprintf(out_, "%s\n", format_progress(step, total_steps_, elapsed / double(done), row).c_str());
  std::fflush(out_);
}

}  // namespace ppo
