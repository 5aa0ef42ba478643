#include "ppo/reward_training.h"

#include <algorithm>
#include <cmath>
#include "engine/error.h"
#include "engine/philox.h"
#include "ppo/sft.h"

namespace ppo {

namespace {

// log(1 + exp(x)) without overflow
double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace

RewardTrainer::RewardTrainer(SingleModel& model, const RewardTrainingConfig& config) : model_(model), cfg_(config) {
  const ModelSpec& spec = model.model().spec();
  PPO_ASSERT(spec.has_scalar() && spec.training == Training::Trained,
             "reward training: the model must be trained and have a scalar head");
  PPO_ASSERT(cfg_.epochs >= 1 && cfg_.batch_size >= 1 && cfg_.micro_batch_size >= 1,
             "reward training: epochs, batch_size and micro_batch_size must be positive");
  PPO_ASSERT(2 * cfg_.micro_batch_size <= model.shape().micro_batch, "reward training: micro_batch_size ",
             cfg_.micro_batch_size, " pairs need ", 2 * cfg_.micro_batch_size, " rows; the model is planned for ",
             model.shape().micro_batch);
  PPO_ASSERT(cfg_.learning_rate > 0 && cfg_.max_grad_norm >= 0,
             "reward training: learning_rate must be positive, max_grad_norm >= 0");
}

PreferenceEval RewardTrainer::accumulate(const std::vector<PreferenceExample>& batch, bool update) {
  PPO_ASSERT(!batch.empty(), "reward training: empty batch");
  Backend& be = model_.backend();
  Transformer& m = model_.model();
  const double pairs = double(batch.size());
  const Share mine = micro_batch_share(m.ranks(), int64_t(batch.size()), cfg_.micro_batch_size);
  PreferenceEval sums;
  for (size_t first = size_t(mine.begin); first < size_t(mine.end); first += size_t(cfg_.micro_batch_size)) {
    const size_t n = std::min(size_t(mine.end) - first, size_t(cfg_.micro_batch_size));
    const SequenceBatch rows = pack_pairs(batch, first, n, cfg_.pad_token_id);  // rows [0,n) chosen, [n,2n) rejected
    const int64_t T = rows.T();
    const SingleModel::Batch in = model_.upload(rows, 0, rows.rows);
    m.forward(in.seq.tokens, in.seq.pos, in.seq.mask);
    m.scalar(in.out);
    const std::vector<float> values = be.to_host(in.out);
    std::vector<float> grad(values.size(), 0.0f);
    for (size_t i = 0; i < n; ++i) {
      const size_t c = i * size_t(T) + size_t(rows.last_column(int64_t(i)));
      const size_t r = (n + i) * size_t(T) + size_t(rows.last_column(int64_t(n + i)));
      const double margin = double(values[c]) - double(values[r]);
      sums.loss += softplus(-margin);
      sums.accuracy += margin > 0 ? 1.0 : 0.0;
      sums.margin += margin;
      grad[c] = float(-sigmoid(-margin) / pairs);
      grad[r] = -grad[c];
    }
    if (!update) continue;
    be.from_host(in.grad, grad);
    m.scalar_backward(in.grad);
    m.backward();
  }
  double all[] = {sums.loss, sums.accuracy, sums.margin};
  m.ranks().host_sum(all, 3);  // ranks meet: every rank's micro-batches
  return {all[0], all[1], all[2]};
}

MetricsRow RewardTrainer::train_step(const std::vector<PreferenceExample>& batch) {
  Transformer& m = model_.model();
  m.zero_grad();
  const PreferenceEval sums = accumulate(batch, true);
  m.reduce_gradients();  // ranks meet: the gradients summed into each rank's shard
  const double norm = m.grad_norm();
  trainer_adamw_step(m, cfg_, cfg_.learning_rate, step_);
  ++step_;
  const double pairs = double(batch.size());
  MetricsRow row;
  row.set(metric::kStep, double(step_));
  row.set(metric::kRmEpoch, double(epoch_ + 1));
  row.set(metric::kRmLoss, sums.loss / pairs);
  row.set(metric::kRmAccuracy, sums.accuracy / pairs);
  row.set(metric::kRmMargin, sums.margin / pairs);
  row.set(metric::kRmGradNorm, norm);
  return row;
}

PreferenceEval RewardTrainer::evaluate(const std::vector<PreferenceExample>& data) {
  PPO_ASSERT(!data.empty(), "reward training: evaluate: no pairs");
  const PreferenceEval sums = accumulate(data, false);
  const double pairs = double(data.size());
  return {sums.loss / pairs, sums.accuracy / pairs, sums.margin / pairs};
}

std::vector<MetricsRow> RewardTrainer::train(const std::vector<PreferenceExample>& data, MetricsLogger* log,
                                             const std::function<void(const MetricsRow&)>& on_row) {
  PPO_ASSERT(!data.empty(), "reward training: no pairs");
  return train_epochs(data, cfg_, epoch_, log, on_row,
                      [&](const std::vector<PreferenceExample>& b) { return train_step(b); });
}

SequenceBatch pack_pairs(const std::vector<PreferenceExample>& pairs, size_t first, size_t n, int32_t pad) {
  std::vector<std::vector<int32_t>> prompts, responses;
  for (size_t i = 0; i < 2 * n; ++i) {
    const PreferenceExample& e = pairs.at(first + i % n);
    PPO_ASSERT(!e.chosen.empty() && !e.rejected.empty(), "pair ", first + i % n, " has an empty response");
    prompts.push_back(e.prompt);
    responses.push_back(i < n ? e.chosen : e.rejected);
  }
  return pack_tight(prompts, responses, pad);
}

std::vector<double> score_responses(SingleModel& model, const std::vector<std::vector<int32_t>>& prompts,
                                    const std::vector<std::vector<int32_t>>& responses, int32_t pad) {
  PPO_ASSERT(model.model().spec().has_scalar(), "score_responses: the model has no scalar head");
  PPO_ASSERT(prompts.size() == responses.size(), "score_responses: ", prompts.size(), " prompts but ",
             responses.size(), " responses");
  std::vector<double> scores;
  const size_t micro = size_t(model.shape().micro_batch);
  for (size_t first = 0; first < prompts.size(); first += micro) {
    const size_t end = std::min(prompts.size(), first + micro);
    const std::vector<std::vector<int32_t>> p(prompts.begin() + first, prompts.begin() + end);
    const std::vector<std::vector<int32_t>> r(responses.begin() + first, responses.begin() + end);
    const SequenceBatch rows = pack_tight(p, r, pad);
    const SingleModel::Batch in = model.upload(rows, 0, rows.rows);
    model.model().forward(in.seq.tokens, in.seq.pos, in.seq.mask);
    model.model().scalar(in.out);
    const std::vector<float> values = model.backend().to_host(in.out);
    for (int64_t b = 0; b < rows.rows; ++b) scores.push_back(values[size_t(b * rows.T() + rows.last_column(b))]);
  }
  return scores;
}

std::vector<PreferenceExample> demo_preference_examples(const DemoTask& task, uint64_t first, int64_t count,
                                                        double label_noise) {
  std::vector<PreferenceExample> data;
  for (int64_t i = 0; i < count; ++i) {
    PreferencePair p = task.preference_pair(first + uint64_t(i), label_noise);
    data.push_back({std::move(p.prompt), std::move(p.chosen), std::move(p.rejected)});
  }
  return data;
}

std::vector<PreferenceExample> preference_examples(const std::vector<io::PreferencePair>& pairs,
                                                   const io::Tokenizer& tokenizer, int32_t eos) {
  std::vector<PreferenceExample> data;
  for (const io::PreferencePair& p : pairs) {
    PreferenceExample e{tokenizer.encode(p.prompt), tokenizer.encode(p.chosen), tokenizer.encode(p.rejected)};
    if (eos >= 0) {
      e.chosen.push_back(eos);
      e.rejected.push_back(eos);
    }
    data.push_back(std::move(e));
  }
  return data;
}

}  // namespace ppo
