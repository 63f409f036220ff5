// playbook as a C++ library: the smallest complete training loop, written against the installed
// headers and libraries (find_package(playbook), see CMakeLists.txt next to this file).
//
// Start here to use playbook from your own program. `playbook train CONFIG.toml` runs the same
// loop with more around it (a data loader, clipping, EMA, evaluation, checkpoints, metrics.jsonl);
// this file shows the pieces a C++ user touches, one header each:
//
//   runtime/core/tensor.h      pb::Tensor (shape, dtype, device; autograd state), factories
//                              (zeros, normal, from_vector), pb::Generator (seeded RNG)
//   runtime/ops/ops.h          pb::ops:: functional ops; each records its backward on the tape
//                              when an input requires a gradient; loss.backward() walks it
//   runtime/config/config.h    config::Schema and config::parse: the TOML keys of a training
//                              config, validated (unknown keys and bad values are errors)
//   models/zoo.h               the model zoo by name: add_model_keys declares the [model] keys,
//                              build_model builds the network they describe (models/mlp.h and
//                              models/resnet.h construct one directly)
//   runtime/optim/optimizer.h  optim::make_optimizer by name; optimizer->step(lr): one fused
//                              update of every parameter, the learning rate an argument
//   runtime/optim/schedule.h   optim::make_schedule: the learning rate as a function of the step
//
// Every header is included as in the playbook tree ("runtime/core/tensor.h"); the package puts
// <prefix>/include/playbook on the include path.
//
// Usage: embed [cpu|cuda[:N]]   (cuda needs a playbook built with CUDA and a visible device)
// Prints the loss every 20 steps and the error on fresh examples; exits 1 unless the loss fell.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <vector>

#include "models/zoo.h"
#include "runtime/config/config.h"
#include "runtime/core/device.h"
#include "runtime/core/random.h"
#include "runtime/core/tensor.h"
#include "runtime/ops/ops.h"
#include "runtime/optim/optimizer.h"
#include "runtime/optim/schedule.h"

namespace {

constexpr int64_t kClasses = 4;
constexpr int64_t kChannels = 1, kHeight = 8, kWidth = 8;
constexpr int64_t kPixels = kChannels * kHeight * kWidth;

struct Batch {
  pb::Tensor images;  // (N, 1, 8, 8) float32
  pb::Tensor labels;  // (N) int32 in [0, kClasses)
};

// Synthetic data: every class is a fixed random 8x8 "prototype" image and an example is its
// class's prototype plus Gaussian noise, so the classes are learnable in a few dozen steps.
class SyntheticData {
 public:
  explicit SyntheticData(pb::Generator& gen) {
    // Tensor factories draw from a Generator; to_vector copies the elements to the host.
    prototypes_ =
        pb::normal({kClasses, kPixels}, /*mean=*/0.0, /*stddev=*/1.0, gen).to_vector<float>();
  }

  Batch next(int64_t n, pb::Generator& gen, pb::Device device) const {
    std::vector<float> pixels(static_cast<size_t>(n * kPixels));
    std::vector<int32_t> labels(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const auto label = static_cast<int32_t>(gen.below(kClasses));
      labels[i] = label;
      for (int64_t p = 0; p < kPixels; ++p) {
        pixels[i * kPixels + p] =
            prototypes_[label * kPixels + p] + 2.0f * static_cast<float>(gen.normal());
      }
    }
    // from_vector copies host values into a new tensor (on the host); .to() moves it to a device.
    const pb::TensorOptions i32 = pb::TensorOptions{}.with_dtype(pb::DType::I32);
    return {pb::from_vector<float>(pixels, {n, kChannels, kHeight, kWidth}).to(device),
            pb::from_vector<int32_t>(labels, {n}, i32).to(device)};
  }

 private:
  std::vector<float> prototypes_;
};

int run(pb::Device device) {
  // 1. The model, from the zoo by name, exactly as a training config's [model] section builds it.
  //    The schema declares the keys (with defaults, ranges and docs); parse validates the text.
  pb::config::Schema schema;
  pb::models::add_model_keys(schema);
  const pb::config::Config config = pb::config::parse(R"(
    [model]
    name = "mlp"
    hidden = [64]
    activation = "relu"
    norm = "none"
  )",
                                                      "embed model", schema);
  pb::Generator init(/*seed=*/1);
  std::shared_ptr<pb::nn::Module> model = pb::models::build_model(
      config, pb::models::DataShape{kChannels, kHeight, kWidth, kClasses}, init);
  model->to(device);
  std::printf("model: %s (%lld parameters) on %s\n", model->describe().c_str(),
              static_cast<long long>(model->num_parameters()), device.str().c_str());

  // 2. The optimizer and the learning-rate schedule, by name, with the same hyperparameter names
  //    as the config's [optimizer] and [schedule] sections.
  const int64_t steps = 100, batch_size = 64;
  std::unique_ptr<pb::optim::Optimizer> optimizer = pb::optim::make_optimizer(
      {"momentum", {{"learning_rate", 0.05}, {"momentum", 0.9}}}, model->named_parameters());
  const pb::optim::Schedule schedule =
      pb::optim::make_schedule({"cosine", {{"warmup_steps", 10}}},
                               optimizer->hyperparameter("learning_rate"), /*total_steps=*/steps);

  // 3. The loop: forward, loss, backward (through the tape the ops recorded), one update.
  pb::Generator data_gen(/*seed=*/2);
  const SyntheticData data(data_gen);
  model->train();
  double first_loss = 0, last_loss = 0;  // the first step's; the mean of the last 10 steps
  for (int64_t step = 0; step < steps; ++step) {
    const Batch batch = data.next(batch_size, data_gen, device);
    optimizer->zero_grad();
    const pb::Tensor logits = (*model)(batch.images);  // (N, kClasses)
    const pb::Tensor loss =
        pb::ops::softmax_cross_entropy(logits, batch.labels, /*weights=*/pb::Tensor{});
    loss.backward();
    // The learning rate is an argument of the update: the schedule is a pure function of the
    // number of updates applied so far.
    optimizer->step(schedule(optimizer->step_count()));

    // item() copies the value to the host (a device sync on CUDA; the trainer reads the loss only
    // at log steps).
    const double value = loss.item<float>();
    if (step == 0) first_loss = value;
    if (step >= steps - 10) last_loss += value / 10;
    if (step % 20 == 0 || step == steps - 1)
      std::printf("step %3lld  lr %.4f  loss %.4f\n", static_cast<long long>(step), schedule(step),
                  value);
  }

  // 4. Evaluation on fresh examples: eval mode, top-1 errors (a (2) tensor {errors, count}).
  model->eval();
  const Batch test = data.next(1000, data_gen, device);
  const std::vector<float> errors =
      pb::ops::topk_errors((*model)(test.images), test.labels, pb::Tensor{}, 1).to_vector<float>();
  std::printf("test error %.3f on %.0f fresh examples\n", errors[0] / errors[1], errors[1]);

  std::printf("embed: loss %.4f -> %.4f (first step -> mean of the last 10)\n", first_loss,
              last_loss);
  if (!(last_loss < 0.5 * first_loss)) {
    std::fprintf(stderr, "embed: the loss did not fall by half\n");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const pb::Device device = pb::Device::parse(argc > 1 ? argv[1] : "cpu");
    if (device.is_cuda() && !pb::cuda_available()) {
      std::fprintf(stderr, "embed: %s requested, but no CUDA device is available\n",
                   device.str().c_str());
      return 2;
    }
    return run(device);
  } catch (const std::exception& e) {
    // playbook reports bad input (shapes, config values, devices) as exceptions whose message
    // names the op, module or key.
    std::fprintf(stderr, "embed: %s\n", e.what());
    return 1;
  }
}
