#include "ppo/sft.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include "engine/error.h"
#include "engine/philox.h"

namespace ppo {

int64_t max_prompt_length(const std::vector<SftExample>& data) {
  size_t n = 0;
  for (const SftExample& e : data) n = std::max(n, e.prompt.size());
  return int64_t(n);
}

int64_t max_response_length(const std::vector<SftExample>& data) {
  size_t n = 0;
  for (const SftExample& e : data) n = std::max(n, e.response.size());
  return int64_t(n);
}

SftTrainer::SftTrainer(SingleModel& model, const SftConfig& config) : model_(model), cfg_(config) {
  const ModelSpec& spec = model.model().spec();
  PPO_ASSERT(spec.has_lm() && spec.training == Training::Trained, "sft: the model must be trained and have an LM head");
  PPO_ASSERT(cfg_.epochs >= 1 && cfg_.batch_size >= 1 && cfg_.micro_batch_size >= 1,
             "sft: epochs, batch_size and micro_batch_size must be positive");
  PPO_ASSERT(cfg_.micro_batch_size <= model.shape().micro_batch, "sft: micro_batch_size ", cfg_.micro_batch_size,
             " exceeds the model's planned micro-batch ", model.shape().micro_batch);
  PPO_ASSERT(cfg_.learning_rate > 0 && cfg_.max_grad_norm >= 0, "sft: learning_rate must be positive, max_grad_norm >= 0");
}

double SftTrainer::accumulate(const std::vector<SftExample>& batch, bool update, int64_t* tokens) {
  PPO_ASSERT(!batch.empty(), "sft: empty batch");
  Backend& be = model_.backend();
  Transformer& m = model_.model();
  std::vector<std::vector<int32_t>> prompts, responses;
  int64_t count = 0, seq_tokens = 0;
  for (const SftExample& e : batch) {
    prompts.push_back(e.prompt);
    responses.push_back(e.response);
    count += int64_t(e.response.size());
    seq_tokens += int64_t(e.prompt.size() + e.response.size());
  }
  PPO_ASSERT(count > 0, "sft: a batch of ", batch.size(), " examples has no response tokens");
  if (tokens) *tokens = seq_tokens;
  // This batch's own widths: positions count from each row's first token, so the columns a
  // token lands in do not change the math.
  const SequenceBatch rows = pack_tight(prompts, responses, cfg_.pad_token_id);
  const int64_t T = rows.T(), micro = cfg_.micro_batch_size;
  const Share mine = micro_batch_share(m.ranks(), rows.rows, micro);  // this rank's micro-batches
  double nll = 0;
  for (int64_t first = mine.begin; first < mine.end; first += micro) {
    const int64_t end = std::min(rows.rows, first + micro), n = end - first;
    const SingleModel::Batch in = model_.upload(rows, first, end);
    // valid targets: position t predicts the response token at t+1 (columns P-1 .. P+len-2)
    std::vector<float> weight(size_t(n * T), 0.0f);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t t = rows.P - 1; t < rows.last_column(first + b); ++t) weight[size_t(b * T + t)] = 1.0f;
    m.forward(in.seq.tokens, in.seq.pos, in.seq.mask);
    m.lm_logprobs(in.seq.targets, 1.0f, in.out, Tensor{});
    const std::vector<float> logp = be.to_host(in.out);
    for (size_t i = 0; i < logp.size(); ++i) nll -= double(weight[i]) * double(logp[i]);
    if (!update) continue;
    for (float& w : weight) w *= -1.0f / float(count);  // dL/dlogp of the token mean
    be.from_host(in.grad, weight);
    m.lm_logprobs_backward(in.grad, Tensor{}, 1.0f);
    m.backward();
  }
  m.ranks().host_sum(&nll, 1);  // ranks meet: every rank's micro-batches
  return nll / double(count);
}

MetricsRow SftTrainer::train_step(const std::vector<SftExample>& batch) {
  const auto start = std::chrono::steady_clock::now();
  Transformer& m = model_.model();
  m.zero_grad();
  int64_t tokens = 0;
  const double loss = accumulate(batch, true, &tokens);
  const double warm = cfg_.warmup_steps > 0 ? std::min(1.0, double(step_ + 1) / double(cfg_.warmup_steps)) : 1.0;
  const float lr = float(cfg_.learning_rate * warm);
  m.reduce_gradients();  // ranks meet: the gradients summed into each rank's shard
  const double norm = m.grad_norm();
  trainer_adamw_step(m, cfg_, lr, step_);
  model_.backend().synchronize();
  ++step_;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MetricsRow row;
  row.set(metric::kStep, double(step_));
  row.set(metric::kSftEpoch, double(epoch_ + 1));
  row.set(metric::kSftLoss, loss);
  row.set(metric::kSftTokensPerSecond, double(tokens) / std::max(seconds, 1e-9));
  row.set(metric::kSftGradNorm, norm);
  row.set(metric::kSftLr, lr);
  return row;
}

double SftTrainer::evaluate(const std::vector<SftExample>& data) {
  double sum = 0;
  int64_t count = 0;
  const int64_t chunk = cfg_.micro_batch_size;
  for (size_t first = 0; first < data.size(); first += size_t(chunk)) {
    const std::vector<SftExample> part(data.begin() + first, data.begin() + std::min(data.size(), first + size_t(chunk)));
    int64_t n = 0;
    for (const SftExample& e : part) n += int64_t(e.response.size());
    if (n == 0) continue;
    sum += accumulate(part, false, nullptr) * double(n);
    count += n;
  }
  PPO_ASSERT(count > 0, "sft: evaluate: the data has no response tokens");
  return sum / double(count);
}

std::vector<MetricsRow> SftTrainer::train(const std::vector<SftExample>& data, MetricsLogger* log,
                                          const std::function<void(const MetricsRow&)>& on_row) {
  PPO_ASSERT(!data.empty(), "sft: no training examples");
  return train_epochs(data, cfg_, epoch_, log, on_row, [&](const std::vector<SftExample>& b) { return train_step(b); });
}

std::vector<SftExample> demo_sft_examples(const DemoTask& task, uint64_t first, int64_t count) {
  std::vector<SftExample> data;
  for (int64_t i = 0; i < count; ++i) data.push_back({task.prompt(first + uint64_t(i)), task.demonstration(first + uint64_t(i))});
  return data;
}

std::vector<SftExample> sft_examples(const std::vector<io::SftPair>& pairs, const io::Tokenizer& tokenizer, int32_t eos) {
  std::vector<SftExample> data;
  for (const io::SftPair& p : pairs) {
    SftExample e{tokenizer.encode(p.prompt), tokenizer.encode(p.completion)};
    if (eos >= 0) e.response.push_back(eos);
    data.push_back(std::move(e));
  }
  return data;
}

}  // namespace ppo
