#pragma once
// Datasets of a training config and evaluation of a model on a split: what the trainer and
// `playbook eval` share.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/zoo.h"
#include "runtime/core/device.h"
#include "runtime/data/dataset.h"
#include "runtime/nn/module.h"
#include "train/config.h"

namespace pb::train {

// "auto" (cuda:0 when a GPU is visible, else cpu), "cpu", "cuda", "cuda:N"; throws naming the
// device when it is not there.
Device pick_device(const std::string& text);

// The "train" or "test" split of the config's dataset (synthetic splits use different seeds).
std::shared_ptr<const data::ImageDataset> load_split(const DataConfig& data,
                                                     const std::string& split);
models::DataShape shape_of(const data::ImageDataset& dataset);

struct Evaluation {
  double loss = 0, error = 0;  // mean cross-entropy and top-1 error over the examples
  int64_t examples = 0;
};

// Loss and top-1 error of `model` (switched to eval mode for the pass) over the examples
// `indices` of `dataset`, in batches of `batch_size` (the last one padded with weight-0 rows);
// the sums stay on `device` until the end.
Evaluation evaluate(nn::Module& model, std::shared_ptr<const data::ImageDataset> dataset,
                    std::vector<int64_t> indices, int64_t batch_size, int workers, Device device);

}  // namespace pb::train
