#include "ppo/single_model.h"

#include <algorithm>
#include "engine/device_memory.h"
#include "engine/error.h"
#include "models/plan.h"
#include "ppo/run_plan.h"

namespace ppo {

namespace {

// The device buffers of the "batch" region: one training micro-batch, and (with a KV cache) the
// buffers of one generation chunk.
std::vector<TensorSpec> batch_specs(const ModelSpec& spec, const RunShape& s, Precision p) {
  const DType stat = grad_dtype_of(p);
  const int64_t B = s.micro_batch, T = s.seq_len();
  std::vector<TensorSpec> t = {{"tokens", DType::I32, {B, T}}, {"pos", DType::I32, {B, T}},
                               {"mask", DType::I32, {B, T}},   {"targets", DType::I32, {B, T}},
                               {"grad", stat, {B, T}},         {"out", stat, {B, T}}};
  if (spec.generation == Generation::KVCache) {
    const std::vector<TensorSpec> gen = GenerationBuffers::specs(s.rollout_batch, s.prompt_len, T, p);
    t.insert(t.end(), gen.begin(), gen.end());
  }
  return t;
}

}  // namespace

std::vector<RegionSpec> single_model_regions(const std::string& owner, const ModelSpec& spec, const RunShape& shape,
                                             Precision p) {
  std::vector<RegionSpec> regions = ppo_regions({{owner, spec}}, shape, p);
  regions.push_back({owner, "batch", packed_bytes(batch_specs(spec, shape, p)), Phase::Always});
  return regions;
}

SingleModel::SingleModel(DeviceKind device, const ModelSpec& spec, RunShape shape, std::string owner,
                         std::optional<Precision> precision, Ranks ranks)
    : owner_(std::move(owner)) {
  const ProcessGroup group = ProcessGroup::of(ranks);
  shape.ranks = group.size;
  shape_ = shape;
  use_local_device(group, device);
  const Precision p = precision.value_or(precision_of(device));
  backend_ = std::make_unique<Backend>(device, p);
  comm_ = Communicator::create(group, *backend_);
  const std::vector<TensorSpec> buffers = batch_specs(spec, shape, p);
  ArenaPlan plan = ArenaPlan::make(single_model_regions(owner_, spec, shape, p));
  arena_ = std::make_unique<Arena>(std::move(plan), device, device_capacity(device));
  backend_->set_scratch(arena_->carver("run", "scratch"));
  model_ = std::make_unique<Transformer>(*backend_, spec, shape, *arena_, owner_, comm_.get());
  Carver carver = arena_->carver(owner_, "batch");
  static const char* const names[] = {"tokens", "pos", "mask", "targets", "grad", "out"};  // outlive the views
  Tensor* slots[] = {&seq_.tokens, &seq_.pos, &seq_.mask, &seq_.targets, &grad_, &out_};
  for (size_t i = 0; i < std::size(slots); ++i) *slots[i] = carver.take(buffers[i], names[i]);
  if (spec.generation == Generation::KVCache)
    gen_ = GenerationBuffers::carve(carver, shape.rollout_batch, shape.prompt_len, shape.seq_len(), p);
}

SingleModel::Batch SingleModel::upload(const SequenceBatch& rows, int64_t begin, int64_t end) {
  const int64_t n = end - begin, T = rows.T();
  PPO_ASSERT(begin >= 0 && n >= 1 && end <= rows.rows, owner_, ": upload of rows [", begin, ",", end, ") of ", rows.rows);
  PPO_ASSERT(n <= shape_.micro_batch && T <= shape_.seq_len(), owner_, ": a batch of (", n, ",", T,
             ") exceeds the planned micro-batch (", shape_.micro_batch, ",", shape_.seq_len(), ")");
  auto view = [&](const Tensor& t) { return Tensor(t.data, t.dtype, t.device, {n, T}, t.name); };
  return {upload_sequences(*backend_, rows, row_range(begin, n), seq_), view(grad_), view(out_)};
}

std::vector<double> SingleModel::response_logps(const SequenceBatch& rows, float inv_temperature, Batch* batch) {
  const Batch in = upload(rows, 0, rows.rows);
  const int64_t P = rows.P, T = rows.T();
  model_->forward(in.seq.tokens, in.seq.pos, in.seq.mask);
  model_->lm_logprobs(in.seq.targets, inv_temperature, in.out, Tensor{}, P - 1);  // the response positions only
  const std::vector<double> lp = backend_->to_host_f64(in.out);
  std::vector<double> sums(static_cast<size_t>(rows.rows), 0.0);
  for (int64_t b = 0; b < rows.rows; ++b)  // response token t: predicted at column P-1+t (ppo/sequences.h)
    for (int64_t j = P - 1; j < rows.last_column(b); ++j) sums[size_t(b)] += lp[size_t(b * T + j)];
  if (batch) *batch = in;
  return sums;
}

SampledResponses SingleModel::generate(const std::vector<std::vector<int32_t>>& prompts, const SamplingSettings& sampling,
                                 int32_t pad) {
  PPO_ASSERT(model_->spec().generation == Generation::KVCache, owner_, ": generate needs a model planned with a KV cache");
  return ppo::generate(*backend_, *model_, gen_, prompts, pad, sampling);
}

}  // namespace ppo
