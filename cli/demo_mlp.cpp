#include "cli/demo_mlp.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <numeric>

#include "models/mlp.h"
#include "runtime/autograd/tape.h"
#include "runtime/data/idx.h"
#include "runtime/ops/ops.h"
#include "runtime/train/progress.h"

namespace pb::cli {
namespace {

// Fashion-MNIST training-set pixel statistics (after scaling to [0,1]).
constexpr float kMean = 0.2860f, kStd = 0.3530f;

struct Split {
  std::vector<float> x;  // (n, features), normalised
  std::vector<int32_t> y;
  int64_t n = 0, features = 0;
};

Split take(const data::LabeledImages& d, const std::vector<int64_t>& rows) {
  Split s;
  s.features = d.channels * d.height * d.width;
  s.n = static_cast<int64_t>(rows.size());
  s.x.resize(static_cast<std::size_t>(s.n * s.features));
  s.y.resize(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const uint8_t* src = d.pixels.data() + rows[i] * s.features;
    float* dst = s.x.data() + static_cast<int64_t>(i) * s.features;
    for (int64_t j = 0; j < s.features; ++j) dst[j] = (src[j] / 255.0f - kMean) / kStd;
    s.y[i] = d.labels[static_cast<std::size_t>(rows[i])];
  }
  return s;
}

void shuffle(std::vector<int64_t>& v, Generator& gen) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[gen.below(i)]);
}

// Batch rows [begin, begin + count) of `order` into tensors.
std::pair<Tensor, Tensor> batch(const Split& s, const std::vector<int64_t>& order, int64_t begin,
                                int64_t count) {
  std::vector<float> x(static_cast<std::size_t>(count * s.features));
  std::vector<int32_t> y(static_cast<std::size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const int64_t row = order[static_cast<std::size_t>(begin + i)];
    std::copy_n(s.x.begin() + row * s.features, s.features, x.begin() + i * s.features);
    y[static_cast<std::size_t>(i)] = s.y[static_cast<std::size_t>(row)];
  }
  return {from_vector<float>(x, Shape{count, s.features}), from_vector<int32_t>(y, Shape{count})};
}

// Top-1 error and mean loss over a whole split.
std::pair<double, double> evaluate(nn::Module& model, const Split& s) {
  autograd::NoGradGuard no_grad;
  model.eval();
  std::vector<int64_t> order(static_cast<std::size_t>(s.n));
  std::iota(order.begin(), order.end(), 0);
  double errors = 0, loss_sum = 0;
  constexpr int64_t kBatch = 1000;
  for (int64_t b = 0; b < s.n; b += kBatch) {
    const int64_t count = std::min(kBatch, s.n - b);
    auto [x, y] = batch(s, order, b, count);
    const Tensor logits = model(x);
    loss_sum += ops::softmax_cross_entropy(logits, y, Tensor{}).item<float>() * count;
    errors += ops::topk_errors(logits, y, Tensor{}, 1).to_vector<float>()[0];
  }
  model.train();
  return {errors / static_cast<double>(s.n), loss_sum / static_cast<double>(s.n)};
}

}  // namespace

int run_mlp_demo(const MlpDemoOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const data::LabeledImages train_all = data::load_idx_split(o.data_dir, "train");
  const data::LabeledImages test_all = data::load_idx_split(o.data_dir, "test");
  if (o.validation_size < 0 || o.validation_size >= train_all.count) {
    fail("demo-mlp: validation size {} must be in [0, {})", o.validation_size, train_all.count);
  }
  // Validation rows: a fixed-seed random subset of the training set; the rest trains.
  constexpr uint64_t kSplitSeed = 1234567;  // fixed: the same split for every run
  Generator split_gen(kSplitSeed);
  std::vector<int64_t> rows(static_cast<std::size_t>(train_all.count));
  std::iota(rows.begin(), rows.end(), 0);
  shuffle(rows, split_gen);
  const auto cut = rows.begin() + o.validation_size;
  const Split val = take(train_all, {rows.begin(), cut});
  const Split train = take(train_all, {cut, rows.end()});
  std::vector<int64_t> test_rows(static_cast<std::size_t>(test_all.count));
  std::iota(test_rows.begin(), test_rows.end(), 0);
  const Split test = take(test_all, test_rows);
  fmt::print("data: {} train / {} validation / {} test examples of {} features from {}\n", train.n,
             val.n, test.n, train.features, o.data_dir);

  Generator init_gen(o.seed);
  models::MlpConfig config;
  config.in_features = train.features;
  config.hidden = o.hidden;
  config.num_classes = 10;
  models::Mlp model(config, init_gen);
  fmt::print("{}", model.str());
  fmt::print("optimizer: sgd (plain), learning rate {}, batch size {}, {} steps\n", o.learning_rate,
             o.batch_size, o.steps);

  Generator data_gen(o.seed + 1);
  std::vector<int64_t> order(static_cast<std::size_t>(train.n));
  std::iota(order.begin(), order.end(), 0);
  shuffle(order, data_gen);
  int64_t cursor = 0;
  train::ProgressLine progress(o.steps, o.log_every, std::cout);
  const std::vector<Tensor> params = model.parameters();
  for (int64_t step = 1; step <= o.steps; ++step) {
    if (cursor + o.batch_size > train.n) {  // new epoch: reshuffle, drop the remainder
      shuffle(order, data_gen);
      cursor = 0;
    }
    auto [x, y] = batch(train, order, cursor, o.batch_size);
    cursor += o.batch_size;
    model.zero_grad();
    const Tensor loss = ops::softmax_cross_entropy(model(x), y, Tensor{});
    const float loss_value = loss.item<float>();
    if (!std::isfinite(loss_value)) {
      fmt::print(stderr, "demo-mlp: loss is {} at step {}; stopping (lower the learning rate)\n",
                 loss_value, step);
      return 3;
    }
    loss.backward();
    {
      autograd::NoGradGuard no_grad;
      for (const Tensor& p : params) ops::add_(p, p.grad(), -o.learning_rate);
    }
    progress.step(step, loss_value, o.batch_size);
    if (step % o.eval_every == 0 || step == o.steps) {
      const auto [val_error, val_loss] = evaluate(model, val);
      fmt::print("eval at step {}: validation loss {:.4f}, error {:.2f}%\n", step, val_loss,
                 100.0 * val_error);
    }
  }
  const auto [test_error, test_loss] = evaluate(model, test);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("test: loss {:.4f}, accuracy {:.2f}% ({} examples), wall time {:.1f} s\n", test_loss,
             100.0 * (1.0 - test_error), test.n, seconds);
  return 0;
}

}  // namespace pb::cli
