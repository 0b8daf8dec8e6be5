#include "verify/model_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "formats/checkpoint.h"
#include "libquant/error.h"
#include "libquant/kernels/act_quant.h"
#include "verify/layer_numerics.h"
#include "verify/moe_served.h"

namespace qt::verify {

using Kind = InputError::Kind;
using kernels::ActScheme;
using kernels::ActType;
using kernels::LinearDescriptor;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

calib::WeightProvider make_dequantizing_provider(const Checkpoint& ckpt, const std::vector<QuantizedLinearEntry>& entries,
                                          std::string source) {
  calib::WeightProvider view = calib::make_view_weight_provider([&ckpt](const std::string& n) { return ckpt.find(n); }, source);
  std::map<std::string, const QuantizedLinearEntry*> by_weight;
  for (const auto& e : entries) by_weight[e.module + ".weight"] = &e;
  return [&ckpt, by_weight = std::move(by_weight), view = std::move(view)](
             const std::string& name, std::vector<float>& out, std::vector<int64_t>& shape) {
    auto it = by_weight.find(name);
    if (it == by_weight.end()) return view(name, out, shape);
    const QuantizedLinearEntry& e = *it->second;
    const LoadedLinear l = load_served_linear(ckpt, e);
    out = dequantize_f32(l, e.desc);
    shape = {e.desc.N, e.desc.K};
  };
}

calib::ActivationTransform make_fake_quant_transform(const Checkpoint& ckpt, const std::vector<QuantizedLinearEntry>& entries) {
  struct Layer {
    LinearDescriptor d;
    float static_scale = 0.0f;
  };
  std::map<std::string, Layer> layers;
  for (const auto& e : entries) {
    if (e.desc.weight_only()) continue;
    Layer L{e.desc, 0.0f};
    if (e.desc.needs_static_act_scale()) {
      const std::string why = read_input_scale(ckpt, e, L.static_scale);
      if (!why.empty()) {
        const TensorView* t = ckpt.find(e.input_scale_tensor);
        throw InputError(Kind::BadValue, t ? t->file : ckpt.dir(), e.input_scale_tensor, "static input scale " + why);
      }
    }
    layers.emplace(e.module, L);
  }
  return [layers = std::move(layers)](const std::string& module, float* x, int64_t T, int64_t in) {
    auto it = layers.find(module);
    if (it == layers.end()) return;
    const LinearDescriptor& d = it->second.d;
    QT_ASSERT(in == d.K);
    // Quantize exactly as every kernel does, then dequantize: one f32 multiply code * scale.
    const kernels::QuantizedActivations q = kernels::quantize_activations(d, x, T, it->second.static_scale);
    const DType cd = d.act_type == ActType::Float8E4M3 ? DType::F8_E4M3 : DType::I8;
#pragma omp parallel for schedule(static) if (T * in >= (int64_t{1} << 16))
    for (int64_t m = 0; m < T; ++m)
      for (int64_t k = 0; k < in; ++k)
        x[m * in + k] = code_value(cd, q.codes[static_cast<size_t>(m * in + k)]) * q.scale(m, k);
  };
}
// ---- logits --------------------------------------------------------------------------------

namespace {
// log-sum-exp of one row in f64 (max subtracted first).
double log_sum_exp(const float* l, int64_t V) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(l[v]));
  double s = 0;
  for (int64_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(l[v]) - mx);
  return mx + std::log(s);
}
int32_t argmax(const float* l, int64_t V) {
  int64_t best = 0;
  for (int64_t v = 1; v < V; ++v)
    if (l[v] > l[best]) best = v;
  return static_cast<int32_t>(best);
}
}  // namespace

LogitComparator::LogitComparator(std::vector<std::vector<int32_t>> samples) : samples_(std::move(samples)) {
  for (const auto& s : samples_) {
    offset_.push_back(total_);
    total_ += s.size();
  }
  ref_argmax_.assign(total_, 0);
  ref_nll_.assign(total_, kNaN);
  q_nll_.assign(total_, kNaN);
  kl_.assign(total_, 0.0);
  agree_.assign(total_, 0);
  ref_seen_.assign(total_, 0);
  q_seen_.assign(total_, 0);
}

void LogitComparator::add_reference(size_t sample, int64_t first_token, const float* logits, int64_t tokens, int64_t vocab) {
  QT_ASSERT(sample < samples_.size() && vocab > 0);
  if (vocab_ == 0) {
    vocab_ = vocab;
    ref_logits_.resize(total_ * static_cast<size_t>(vocab));
  }
  QT_ASSERT(vocab == vocab_);
  const auto& ids = samples_[sample];
  for (int64_t i = 0; i < tokens; ++i) {
    const int64_t t = first_token + i;
    QT_ASSERT(t >= 0 && t < static_cast<int64_t>(ids.size()));
    const size_t g = offset_[sample] + static_cast<size_t>(t);
    const float* row = logits + i * vocab;
    std::memcpy(ref_logits_.data() + g * static_cast<size_t>(vocab), row, static_cast<size_t>(vocab) * sizeof(float));
    ref_argmax_[g] = argmax(row, vocab);
    if (t + 1 < static_cast<int64_t>(ids.size()))
      ref_nll_[g] = log_sum_exp(row, vocab) - static_cast<double>(row[ids[static_cast<size_t>(t + 1)]]);
    ref_seen_[g] = 1;
  }
}

void LogitComparator::add_quantized(size_t sample, int64_t first_token, const float* logits, int64_t tokens, int64_t vocab) {
  QT_ASSERT(sample < samples_.size() && vocab == vocab_);
  const auto& ids = samples_[sample];
  for (int64_t i = 0; i < tokens; ++i) {
    const int64_t t = first_token + i;
    QT_ASSERT(t >= 0 && t < static_cast<int64_t>(ids.size()));
    const size_t g = offset_[sample] + static_cast<size_t>(t);
    QT_ASSERT(ref_seen_[g]);
    const float* q = logits + i * vocab;
    const float* r = ref_logits_.data() + g * static_cast<size_t>(vocab);
    const double lr = log_sum_exp(r, vocab), lq = log_sum_exp(q, vocab);
    // KL(ref || quant) = sum_v p_r (log p_r - log p_q), all in f64.
    double kl = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const double a = static_cast<double>(r[v]) - lr, b = static_cast<double>(q[v]) - lq;
      kl += std::exp(a) * (a - b);
    }
    kl_[g] = std::max(kl, 0.0);
    agree_[g] = argmax(q, vocab) == ref_argmax_[g];
    if (t + 1 < static_cast<int64_t>(ids.size()))
      q_nll_[g] = lq - static_cast<double>(q[ids[static_cast<size_t>(t + 1)]]);
    q_seen_[g] = 1;
  }
}

double LogitComparator::reference_perplexity() const {
  double s = 0;
  int64_t n = 0;
  for (size_t g = 0; g < total_; ++g) {
    QT_ASSERT(ref_seen_[g]);
    if (!std::isnan(ref_nll_[g])) s += ref_nll_[g], ++n;
  }
  return n ? std::exp(s / static_cast<double>(n)) : kNaN;
}

ModelMetrics LogitComparator::finish() const {
  ModelMetrics m;
  m.samples = static_cast<int64_t>(samples_.size());
  m.tokens = static_cast<int64_t>(total_);
  double sr = 0, sq = 0, skl = 0;
  int64_t agree = 0;
  for (size_t g = 0; g < total_; ++g) {
    QT_ASSERT(ref_seen_[g] && q_seen_[g]);
    if (!std::isnan(ref_nll_[g])) sr += ref_nll_[g], sq += q_nll_[g], ++m.predicted;
    skl += kl_[g];
    agree += agree_[g];
  }
  m.ppl_ref = m.predicted ? std::exp(sr / static_cast<double>(m.predicted)) : kNaN;
  m.ppl_quant = m.predicted ? std::exp(sq / static_cast<double>(m.predicted)) : kNaN;
  if (total_ > 0) {
    m.kl_mean = skl / static_cast<double>(total_);
    std::vector<double> s = kl_;
    std::sort(s.begin(), s.end());
    // Nearest-rank 99th percentile: the ceil(0.99 n)-th smallest value.
    const size_t rank = static_cast<size_t>(std::ceil(0.99 * static_cast<double>(total_)));
    m.kl_p99 = s[std::max<size_t>(rank, 1) - 1];
    m.kl_max = s.back();
    m.top1 = static_cast<double>(agree) / static_cast<double>(total_);
  }
  return m;
}

// ---- held-out samples ----------------------------------------------------------------------

std::vector<std::vector<int32_t>> heldout_samples(const std::vector<int32_t>& ids,
                                                  const std::vector<int32_t>& prefix,
                                                  const std::vector<int32_t>& suffix,
                                                  int64_t max_tokens, int64_t seq_len) {
  auto starts_with = [&](const std::vector<int32_t>& p) {
    return p.size() <= ids.size() && std::equal(p.begin(), p.end(), ids.begin());
  };
  auto ends_with = [&](const std::vector<int32_t>& p) {
    return p.size() <= ids.size() && std::equal(p.rbegin(), p.rend(), ids.rbegin());
  };
  size_t b = starts_with(prefix) ? prefix.size() : 0;
  size_t e = ids.size() - (ends_with(suffix) && ids.size() - b >= suffix.size() ? suffix.size() : 0);
  const int64_t body = seq_len - static_cast<int64_t>(prefix.size());
  if (body < 1)
    throw InputError(Kind::Usage, "", "", "sequence length " + std::to_string(seq_len) +
                                              " leaves no room after the tokenizer's special prefix");
  std::vector<std::vector<int32_t>> out;
  int64_t total = 0;
  while (b < e && total < max_tokens) {
    std::vector<int32_t> s(prefix);
    const size_t take = std::min<size_t>(static_cast<size_t>(body), e - b);
    s.insert(s.end(), ids.begin() + static_cast<std::ptrdiff_t>(b), ids.begin() + static_cast<std::ptrdiff_t>(b + take));
    b += take;
    if (static_cast<int64_t>(s.size()) > max_tokens - total) s.resize(static_cast<size_t>(max_tokens - total));
    if (s.size() < 2) break;
    total += static_cast<int64_t>(s.size());
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::vector<int32_t>> chunk_ids(const std::vector<int32_t>& ids, int64_t max_tokens, int64_t seq_len) {
  QT_ASSERT(seq_len >= 1);
  std::vector<std::vector<int32_t>> out;
  const size_t n = std::min<size_t>(ids.size(), static_cast<size_t>(std::max<int64_t>(max_tokens, 0)));
  for (size_t b = 0; b < n; b += static_cast<size_t>(seq_len)) {
    const size_t e = std::min(n, b + static_cast<size_t>(seq_len));
    if (e - b >= 2 || out.empty())
      out.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(b), ids.begin() + static_cast<std::ptrdiff_t>(e));
  }
  return out;
}

}  // namespace qt::verify
