// Augmentation. apply() writes each output row in at most three runs (padding, copied pixels,
// padding) with the normalisation folded into one multiply-add per pixel, v * scale_c + bias_c,
// which the compiler vectorises; the flipped variant reads its source row backwards.

#include "runtime/data/augment.h"

#include <algorithm>
#include <string>

#include "runtime/core/error.h"
#include "runtime/data/dataset.h"

namespace pb::data {

ChannelStats dataset_stats(std::string_view name) {
  const std::string canonical = canonical_dataset_name(name);  // throws for unknown names
  if (canonical == "fashion_mnist") return {{0.2860f}, {0.3530f}};
  if (canonical == "mnist") return {{0.1307f}, {0.3081f}};
  if (canonical == "cifar10") return {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
  if (canonical == "cifar100" || canonical == "cifar100_coarse") {
    return {{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};
  }
  return {{0.5f}, {0.2898f}};  // synthetic: uniform bytes, std sqrt((256^2 - 1) / 12) / 255
}

AugmentConfig default_augment(std::string_view dataset, bool train) {
  AugmentConfig config;
  config.normalize = dataset_stats(dataset);
  const bool rgb = config.normalize.mean.size() == 3;
  if (train && rgb) {
    config.crop_padding = 4;
    config.horizontal_flip = true;
  }
  return config;
}

Augmenter::Augmenter(const AugmentConfig& config, int64_t channels, int64_t height, int64_t width)
    : config_(config), channels_(channels), height_(height), width_(width) {
  if (channels < 1 || height < 1 || width < 1) {
    fail("augment: image shape ({}, {}, {}) must be positive", channels, height, width);
  }
  constexpr int64_t kMaxPadding = int64_t{1} << 20;
  if (config.crop_padding < 0 || config.crop_padding > kMaxPadding) {
    fail("augment: crop_padding must be in [0, 2^20], got {}", config.crop_padding);
  }
  const auto per_channel = [&](const std::vector<float>& values, const char* what, float fallback) {
    if (values.empty()) return std::vector<float>(static_cast<std::size_t>(channels), fallback);
    if (values.size() == 1)
      return std::vector<float>(static_cast<std::size_t>(channels), values[0]);
    if (static_cast<int64_t>(values.size()) != channels) {
      fail("augment: normalisation has {} {} values for {}-channel images (expected 1 or {})",
           values.size(), what, channels, channels);
    }
    return values;
  };
  const std::vector<float> mean = per_channel(config.normalize.mean, "mean", 0.0f);
  const std::vector<float> stddev = per_channel(config.normalize.std, "std", 1.0f);
  scale_.resize(static_cast<std::size_t>(channels));
  bias_.resize(static_cast<std::size_t>(channels));
  for (std::size_t c = 0; c < stddev.size(); ++c) {
    if (!(stddev[c] > 0.0f)) fail("augment: std of channel {} must be > 0, got {}", c, stddev[c]);
    scale_[c] = static_cast<float>(1.0 / (255.0 * static_cast<double>(stddev[c])));
    bias_[c] = static_cast<float>(-static_cast<double>(mean[c]) / static_cast<double>(stddev[c]));
  }
}

AugmentDraw Augmenter::draw(uint64_t seed, int64_t epoch, int64_t index) const {
  AugmentDraw d;
  if (config_.crop_padding == 0 && !config_.horizontal_flip) return d;
  const DataRandom r = data_random(seed, DataStream::kAugment, static_cast<uint32_t>(epoch),
                                   static_cast<uint64_t>(index));
  // Offsets in [0, 2P] by multiply-shift of a 32-bit word (bias below (2P+1) / 2^32).
  const auto range = static_cast<uint64_t>(2 * config_.crop_padding + 1);
  d.dy = static_cast<int64_t>((uint64_t{r.v[0]} * range) >> 32);
  d.dx = static_cast<int64_t>((uint64_t{r.v[1]} * range) >> 32);
  d.flip = config_.horizontal_flip && (r.v[2] >> 31) != 0;
  return d;
}

void Augmenter::apply(const uint8_t* src, const AugmentDraw& draw, float* dst) const {
  constexpr int64_t kChunk = 64;
  const int64_t H = height_, W = width_, P = config_.crop_padding;
  const int64_t shift_y = draw.dy - P;  // source row of output row y: y + shift_y
  const int64_t shift_x = draw.dx - P;
  // Output columns [x0, x1) read the image; the rest are padding.
  //   no flip: sx = x + shift_x          flip: sx = W - 1 - x + shift_x
  int64_t x0 = draw.flip ? std::max<int64_t>(0, shift_x) : std::max<int64_t>(0, -shift_x);
  const int64_t x1 = std::max(x0, draw.flip ? std::min(W, W + shift_x) : std::min(W, W - shift_x));
  x0 = std::min(x0, W);
  for (int64_t c = 0; c < channels_; ++c) {
    const float scale = scale_[static_cast<std::size_t>(c)];
    const float bias = bias_[static_cast<std::size_t>(c)];
    const uint8_t* s_plane = src + c * H * W;  // (H,W)
    float* d_plane = dst + c * H * W;          // (H,W)
    for (int64_t y = 0; y < H; ++y) {
      float* __restrict d_row = d_plane + y * W;
      const int64_t sy = y + shift_y;
      if (sy < 0 || sy >= H) {
        std::fill(d_row, d_row + W, bias);
        continue;
      }
      std::fill(d_row, d_row + x0, bias);
      const uint8_t* __restrict s_row = s_plane + sy * W;
      if (!draw.flip) {
        for (int64_t x = x0; x < x1; ++x) {
          d_row[x] = static_cast<float>(s_row[x + shift_x]) * scale + bias;
        }
      } else {
        // sx = mirror - x. Reversing bytes does not vectorise without SSSE3, reversing floats
        // does: convert the source run forwards into a stack buffer, then store it backwards.
        const int64_t mirror = W - 1 + shift_x;
        for (int64_t a = mirror - (x1 - 1); a <= mirror - x0; a += kChunk) {  // source columns
          const int64_t n = std::min(kChunk, mirror - x0 + 1 - a);
          float chunk[kChunk];
          for (int64_t i = 0; i < n; ++i)
            chunk[i] = static_cast<float>(s_row[a + i]) * scale + bias;
          float* __restrict d = d_row + (mirror - a);  // d[-i] = out(y, mirror - (a + i))
          for (int64_t i = 0; i < n; ++i) d[-i] = chunk[i];
        }
      }
      std::fill(d_row + x1, d_row + W, bias);
    }
  }
}

}  // namespace pb::data
