#include "train/evaluate.h"

#include <algorithm>

#include "runtime/autograd/tape.h"
#include "runtime/data/augment.h"
#include "runtime/data/loader.h"
#include "runtime/device/pinned.h"
#include "runtime/ops/ops.h"

namespace pb::train {

Device pick_device(const std::string& text) {
  if (text == "auto") return cuda_available() ? Device::cuda(0) : Device::cpu();
  const Device d = Device::parse(text);
  if (d.is_cuda() && d.index >= cuda_device_count()) {
    fail("device {} requested but {} CUDA device(s) are visible", d.str(), cuda_device_count());
  }
  return d;
}

data::SyntheticSpec synthetic_spec(const DataConfig& d, uint64_t seed) {
  data::SyntheticSpec s;
  s.count = d.synthetic_count;
  s.channels = d.synthetic_shape[0];
  s.height = d.synthetic_shape[1];
  s.width = d.synthetic_shape[2];
  s.num_classes = d.synthetic_classes;
  s.seed = seed;
  return s;
}

std::shared_ptr<const data::ImageDataset> load_split(const DataConfig& d,
                                                     const std::string& split) {
  // The synthetic test split uses another seed than the training split.
  const uint64_t seed = split == "train" ? 1 : 2;
  return std::make_shared<const data::ImageDataset>(
      data::make_dataset(d.dataset, d.dir, split, synthetic_spec(d, seed)));
}

models::DataShape shape_of(const data::ImageDataset& ds) {
  return {ds.channels, ds.height, ds.width, ds.num_classes};
}

Evaluation evaluate(nn::Module& model, std::shared_ptr<const data::ImageDataset> ds,
                    std::vector<int64_t> indices, int64_t batch_size, int workers, Device device) {
  autograd::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  data::LoaderConfig config =
      data::LoaderConfig::evaluation(batch_size, data::default_augment(ds->name, false), workers);
  config.pin_memory = device.is_cuda();
  data::DataLoader loader(ds, std::move(indices), config);
  // Pinned batches go to the device asynchronously; the host reads the sums once, at the end.
  auto stage = [&](const Tensor& host) {
    device::DeviceCopy copied = device::to_device_async(host, device);
    if (copied.done.defined()) loader.buffer_pool().record_event(host, std::move(copied.done));
    return copied.tensor;
  };
  const TensorOptions on_device = TensorOptions{}.with_device(device);
  Tensor loss_sum = zeros({}, on_device), counts = zeros({2}, on_device);
  int64_t examples = 0;
  while (auto batch = loader.next()) {
    const Tensor x = stage(batch->images), y = stage(batch->labels), w = stage(batch->weights);
    const Tensor logits = model(x);
    ops::add_(loss_sum, ops::softmax_cross_entropy(logits, y, w),
              static_cast<double>(batch->real_count));
    ops::add_(counts, ops::topk_errors(logits, y, w, 1));
    examples += batch->real_count;
  }
  model.train(was_training);
  Evaluation e;
  e.examples = examples;
  if (examples > 0) {
    const std::vector<float> c = counts.to_vector<float>();
    e.loss = loss_sum.item<float>() / static_cast<double>(examples);
    e.error = c[0] / std::max(1.0f, c[1]);
  }
  return e;
}

}  // namespace pb::train
