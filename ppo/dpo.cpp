#include "ppo/dpo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include "engine/error.h"
#include "io/checkpoint.h"
#include "ppo/prompts.h"

namespace ppo {

namespace {

constexpr uint64_t kPairStream = uint64_t(1) << 42;  // Philox streams of the per-pass pair order

// log sigmoid(x) without overflow
double log_sigmoid(double x) { return x < 0 ? x - std::log1p(std::exp(x)) : -std::log1p(std::exp(-x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace

DpoSettings DpoSettings::from_config(const PpoConfig& c) { return {c.dpo_beta, c.dpo_label_smoothing, c.dpo_loss}; }

PairLoss dpo_pair_loss(double h, const DpoSettings& s) {
  if (s.loss == DpoLoss::Ipo) {
    const double d = h - 1.0 / (2.0 * s.beta);
    return {d * d, 2.0 * d};
  }
  const double eps = s.label_smoothing, z = s.beta * h;
  // d/dz -log sigmoid(z) = -sigmoid(-z);  d/dz -log sigmoid(-z) = sigmoid(z)
  return {-(1.0 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z),
          s.beta * (-(1.0 - eps) * sigmoid(-z) + eps * sigmoid(z))};
}

DpoSums dpo_pass(SingleModel& model, const std::vector<PreferenceExample>& pairs,
                 const std::vector<PairLogps>* reference, const DpoSettings& settings, int64_t micro_pairs,
                 int32_t pad, Gradients gradients, std::vector<PairLogps>* logps) {
  PPO_ASSERT(!pairs.empty() && micro_pairs >= 1, "dpo: no pairs, or micro-batches of ", micro_pairs, " pairs");
  PPO_ASSERT(!reference || reference->size() == pairs.size(), "dpo: ", reference ? reference->size() : 0,
             " reference log-probs for ", pairs.size(), " pairs");
  PPO_ASSERT(gradients == Gradients::None || reference, "dpo: gradients need the reference log-probs");
  Backend& be = model.backend();
  Transformer& m = model.model();
  DpoSums sums;
  sums.pairs = double(pairs.size());
  const Share mine = micro_batch_share(model.ranks(), int64_t(pairs.size()), micro_pairs);  // this rank's micro-batches
  std::vector<double> my_logps;  // chosen, rejected per pair of this rank's
  for (size_t first = size_t(mine.begin); first < size_t(mine.end); first += size_t(micro_pairs)) {
    const size_t n = std::min(size_t(mine.end) - first, size_t(micro_pairs));
    const SequenceBatch rows = pack_pairs(pairs, first, n, pad);  // rows [0,n) chosen, [n,2n) rejected
    const int64_t P = rows.P, T = rows.T();
    SingleModel::Batch in;
    const std::vector<double> summed = model.response_logps(rows, 1.0f, &in);
    std::vector<float> grad(size_t(rows.rows * T), 0.0f);
    for (size_t i = 0; i < n; ++i) {
      const PairLogps pl{summed[i], summed[n + i]};
      my_logps.insert(my_logps.end(), {pl.chosen, pl.rejected});
      if (!reference) continue;
      const PairLogps& ref = (*reference)[first + i];
      const double chosen = pl.chosen - ref.chosen, rejected = pl.rejected - ref.rejected;
      const PairLoss l = dpo_pair_loss(chosen - rejected, settings);
      sums.loss += l.loss;
      sums.chosen_rewards += settings.beta * chosen;
      sums.rejected_rewards += settings.beta * rejected;
      sums.accuracies += chosen > rejected ? 1 : 0;
      sums.chosen_logps += pl.chosen;
      sums.rejected_logps += pl.rejected;
      const float g = float(l.dloss_dh / sums.pairs);  // d(mean loss)/d(pi_c) = -d/d(pi_r)
      for (int64_t j = P - 1; j < rows.last_column(int64_t(i)); ++j) grad[size_t(int64_t(i) * T + j)] = g;
      for (int64_t j = P - 1; j < rows.last_column(int64_t(n + i)); ++j) grad[size_t(int64_t(n + i) * T + j)] = -g;
    }
    if (gradients == Gradients::None) continue;
    be.from_host(in.grad, grad);
    m.lm_logprobs_backward(in.grad, Tensor{}, 1.0f);
    m.backward();
  }
  // ranks meet: every rank's micro-batches (their sums; their pairs' log-probs in pair order)
  double all[] = {sums.loss,       sums.chosen_rewards, sums.rejected_rewards,
                  sums.accuracies, sums.chosen_logps,   sums.rejected_logps};
  model.ranks().host_sum(all, std::size(all));
  sums.loss = all[0], sums.chosen_rewards = all[1], sums.rejected_rewards = all[2], sums.accuracies = all[3];
  sums.chosen_logps = all[4], sums.rejected_logps = all[5];
  if (logps) {
    const std::vector<double> every = model.ranks().host_gather(my_logps);
    for (size_t i = 0; i + 1 < every.size(); i += 2) logps->push_back({every[i], every[i + 1]});
  }
  return sums;
}

ModelSpec dpo_policy_spec(const PpoConfig& c) {
  return {ModelConfig::from_json(c.policy, "config: policy"), Heads::LM, Training::Trained, Generation::None};
}

RunShape dpo_shape(const PpoConfig& c, int64_t ranks) {
  return {1, c.prompt_length, c.response_length, 2 * c.micro_batch_size, ranks};
}

// ---- the trainer --------------------------------------------------------------------------------------

DpoTrainer::DpoTrainer(SingleModel& model, const PpoConfig& config, std::vector<PreferenceExample> pairs, int32_t pad,
                       std::function<void(MetricsRow&)> monitor)
    : model_(model), cfg_(config), pairs_(std::move(pairs)), pad_(pad), monitor_(std::move(monitor)) {
  const ModelSpec& spec = model.model().spec();
  PPO_ASSERT(spec.has_lm() && spec.training == Training::Trained, "dpo: the policy must be trained and have an LM head");
  PPO_ASSERT(2 * cfg_.micro_batch_size <= model.shape().micro_batch, "dpo: micro_batch_size ", cfg_.micro_batch_size,
             " pairs need ", 2 * cfg_.micro_batch_size, " rows; the model is planned for ", model.shape().micro_batch);
  PPO_ASSERT(!pairs_.empty(), "dpo: no preference pairs");
  const int64_t vocab = spec.config.vocab_size;
  for (size_t i = 0; i < pairs_.size(); ++i) {
    const PreferenceExample& e = pairs_[i];
    PPO_ASSERT(!e.prompt.empty() && int64_t(e.prompt.size()) <= cfg_.prompt_length, "dpo: pair ", i, ": a prompt of ",
               e.prompt.size(), " tokens; 1 to prompt_length = ", cfg_.prompt_length, " expected");
    for (const std::vector<int32_t>* r : {&e.chosen, &e.rejected})
      PPO_ASSERT(!r->empty() && int64_t(r->size()) <= cfg_.response_length, "dpo: pair ", i, ": a response of ",
                 r->size(), " tokens; 1 to response_length = ", cfg_.response_length, " expected");
    for (const std::vector<int32_t>* ids : {&e.prompt, &e.chosen, &e.rejected})
      for (int32_t id : *ids)
        PPO_ASSERT(id >= 0 && id < vocab, "dpo: pair ", i, ": token id ", id, " is outside the vocabulary [0,", vocab, ")");
  }
  if (!cfg_.resume.empty()) {
    load_checkpoint(cfg_.resume);
    return;
  }
  if (cfg_.save_every > 0) io::check_no_checkpoints(cfg_.output_dir + "/checkpoints", "dpo");
  dpo_pass(model_, pairs_, nullptr, DpoSettings::from_config(cfg_), cfg_.micro_batch_size, pad_, Gradients::None,
           &reference_);
}

MetricsRow DpoTrainer::step() {
  const auto start = std::chrono::steady_clock::now();
  std::vector<PreferenceExample> batch;
  std::vector<PairLogps> reference;
  for (int64_t i = 0; i < cfg_.rollout_batch_size; ++i) {
    const uint64_t k = shuffled_index(progress_.next_example++, pairs_.size(), cfg_.seed, kPairStream);
    batch.push_back(pairs_[size_t(k)]);
    reference.push_back(reference_[size_t(k)]);
  }
  Transformer& m = model_.model();
  m.zero_grad();
  const DpoSums s = dpo_pass(model_, batch, &reference, DpoSettings::from_config(cfg_), cfg_.micro_batch_size, pad_,
                             Gradients::Accumulate);
  m.reduce_gradients();  // ranks meet: the gradients summed into each rank's shard
  const double norm = m.grad_norm();
  const bool skipped = !std::isfinite(s.loss) || !std::isfinite(norm);  // weights untouched
  const float lr = float(cfg_.learning_rate * cfg_.lr_factor(progress_.optimizer_steps_done));
  if (skipped) {
    m.zero_grad();
  } else {
    trainer_adamw_step(m, cfg_, lr, progress_.optimizer_steps_done);
    ++progress_.optimizer_steps_done;
  }
  model_.backend().synchronize();
  ++progress_.steps_done;

  MetricsRow row;
  row.set(metric::kStep, double(progress_.steps_done));
  row.set("epoch", double(progress_.next_example) / double(pairs_.size()));
  row.set(metric::kDpoLoss, s.loss / s.pairs);
  row.set(metric::kRewardsChosen, s.chosen_rewards / s.pairs);
  row.set(metric::kRewardsRejected, s.rejected_rewards / s.pairs);
  row.set(metric::kRewardsMargins, (s.chosen_rewards - s.rejected_rewards) / s.pairs);
  row.set(metric::kRewardsAccuracies, s.accuracies / s.pairs);
  row.set(metric::kLogpsChosen, s.chosen_logps / s.pairs);
  row.set(metric::kLogpsRejected, s.rejected_logps / s.pairs);
  row.set(metric::kGradNorm, norm);
  row.set(metric::kLr, lr);
  row.set(metric::kStepSeconds, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  row.set(metric::kSkipped, skipped ? 1.0 : 0.0);
  if (monitor_) monitor_(row);
  metrics_.push_back(row);
  if (cfg_.save_every > 0 && progress_.steps_done % cfg_.save_every == 0) save_checkpoint(cfg_.output_dir + "/checkpoints");
  return row;
}

// ---- checkpoints ----------------------------------------------------------------------------------------

nlohmann::json DpoTrainer::run_shapes() const {
  return {{"algorithm", to_string(Algorithm::Dpo)},
          {"models", {{"policy", model_.model().config().to_json()}}},
          {"precision", model_.backend().precision() == Precision::BF16 ? "bf16" : "f32"},
          {"rollout_batch_size", cfg_.rollout_batch_size},
          {"seed", cfg_.seed},
          {"pairs", pairs_.size()}};
}

void DpoTrainer::save_checkpoint(const std::string& run_dir) {
  model_.backend().synchronize();
  nlohmann::json state = run_state_json(progress_, "next_pair", int64_t(pairs_.size()), run_shapes());
  nlohmann::json reference = nlohmann::json::array();
  for (const PairLogps& r : reference_) reference.push_back({r.chosen, r.rejected});
  state["reference_logps"] = reference;
  io::save_checkpoint(run_dir, progress_.steps_done, {{"policy", &model_.model()}}, state);
}

void DpoTrainer::load_checkpoint(const std::string& path) {
  const std::string dir = io::checkpoint_step_dir(path), where = dir + "/state.json";
  const nlohmann::json state = io::load_checkpoint(dir, {});  // the state first: other shapes stop here
  const RunProgress progress = read_run_state(state, "next_pair", run_shapes(), where);
  const nlohmann::json& ref = state.value("reference_logps", nlohmann::json());
  PPO_ASSERT(ref.is_array() && ref.size() == pairs_.size(), where, ": reference_logps must hold one [chosen, rejected] "
             "per pair (", pairs_.size(), ")");
  std::vector<PairLogps> reference;
  for (const nlohmann::json& r : ref) {
    PPO_ASSERT(r.is_array() && r.size() == 2 && r[0].is_number() && r[1].is_number(), where,
               ": reference_logps: expected [chosen, rejected], got ", r.dump());
    reference.push_back({r[0].get<double>(), r[1].get<double>()});
  }
  io::load_checkpoint(dir, {{"policy", &model_.model()}});
  progress_ = progress;
  reference_ = std::move(reference);
  if (model_.ranks().is_root()) io::rewind_latest(cfg_.output_dir + "/checkpoints", dir);  // later steps may be redone
}

}  // namespace ppo
