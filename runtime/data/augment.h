#pragma once
// Training-time augmentation and normalisation: uint8 (C,H,W) -> float32 (C,H,W).
//
// Per example, in this order (as torchvision's RandomCrop(padding) -> RandomHorizontalFlip ->
// ToTensor -> Normalize):
//   1. random crop with zero padding: pad P zero pixels on every side, then crop back to HxW at
//      offset (dy, dx), each uniform in [0, 2P]; out(y, x) = src(y + dy - P, x + dx - P), 0 off
//      the image;
//   2. horizontal flip with probability 1/2: out(y, x) = cropped(y, W-1-x);
//   3. per-channel normalisation: (v / 255 - mean_c) / std_c (a padded pixel is v = 0).
// The draws for example `index` (its index in the dataset) in epoch `epoch` are one Philox call,
// data_random(seed, DataStream::kAugment, epoch, index): a pure function of (seed, epoch, index),
// whatever thread or batch builds the example.

#include <cstdint>
#include <string_view>
#include <vector>

namespace pb::data {

// Per-channel mean and standard deviation of pixel values scaled to [0, 1].
struct ChannelStats {
  std::vector<float> mean;
  std::vector<float> std;
};

// Known statistics of the training splits: fashion_mnist 0.2860 / 0.3530, mnist 0.1307 /
// 0.3081, cifar10 (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616), cifar100 and
// cifar100_coarse (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762), synthetic (uniform bytes)
// 0.5 / 0.2898. Throws DatasetError listing the known names for any other name.
ChannelStats dataset_stats(std::string_view name);

struct AugmentConfig {
  int64_t crop_padding = 0;      // P; 0 = no random crop
  bool horizontal_flip = false;  // flip with probability 1/2
  // Normalisation: empty = mean 0 / std 1 (plain v / 255); one value = every channel; else one
  // per channel.
  ChannelStats normalize;
};

// The usual recipe for a dataset: its stats always; for training, CIFAR-style datasets (3
// channels) add crop_padding 4 and horizontal flips, 1-channel datasets (MNIST-style) none.
AugmentConfig default_augment(std::string_view dataset, bool train);

// The random choices for one example.
struct AugmentDraw {
  int64_t dy = 0;  // crop offset in the padded image, [0, 2P]
  int64_t dx = 0;
  bool flip = false;
};

// An AugmentConfig checked against an image shape and turned into per-channel scale and bias.
// Stateless after construction: apply() may be called from any number of threads.
class Augmenter {
 public:
  // Throws ValueError for a negative or too-large padding, a stats size that is neither 0, 1 nor
  // channels, or std <= 0.
  Augmenter(const AugmentConfig& config, int64_t channels, int64_t height, int64_t width);

  const AugmentConfig& config() const { return config_; }

  // The draws of example `index` of epoch `epoch` (no crop -> dy = dx = P = 0; no flip -> false).
  AugmentDraw draw(uint64_t seed, int64_t epoch, int64_t index) const;

  // src: (C,H,W) uint8 -> dst: (C,H,W) float32. No allocation.
  void apply(const uint8_t* src, const AugmentDraw& draw, float* dst) const;

 private:
  AugmentConfig config_;
  int64_t channels_, height_, width_;
  std::vector<float> scale_;  // (C): 1 / (255 std_c)
  std::vector<float> bias_;   // (C): -mean_c / std_c, also the value of a padded pixel
};

}  // namespace pb::data
