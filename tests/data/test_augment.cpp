// Augmentation: hand-checked flips, crops and normalisation values, every (dy, dx, flip) against a
// plain pad -> crop -> flip -> normalise reference, the draws' determinism and ranges, the known
// dataset statistics, and configuration errors.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/data/augment.h"
#include "runtime/data/dataset.h"

namespace pb::data {
namespace {

using Bytes = std::vector<std::uint8_t>;

template <typename E>
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an exception with \"" << *fragments.begin() << "\"";
  } catch (const E& e) {
    const std::string what = e.what();
    for (const std::string& fragment : fragments) {
      EXPECT_NE(what.find(fragment), std::string::npos)
          << "message lacks \"" << fragment << "\": " << what;
    }
  }
}

std::vector<float> run(const Augmenter& a, const Bytes& src, AugmentDraw draw, std::size_t n) {
  std::vector<float> out(n, -999.0f);
  a.apply(src.data(), draw, out.data());
  return out;
}

// Values v / 255 (no normalisation).
std::vector<float> scaled(std::initializer_list<int> values) {
  std::vector<float> out;
  for (const int v : values) out.push_back(static_cast<float>(v) / 255.0f);
  return out;
}

void expect_near_all(const std::vector<float>& got, const std::vector<float>& want,
                     float tol = 1e-6f) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "at " << i;
}

TEST(Augment, PlainScalingWithoutNormalisation) {
  const Augmenter a({}, 1, 1, 4);
  expect_near_all(run(a, {0, 1, 128, 255}, {}, 4), scaled({0, 1, 128, 255}));
}

TEST(Augment, HorizontalFlipOfAKnownImage) {
  AugmentConfig config;
  config.horizontal_flip = true;
  const Augmenter a(config, 2, 2, 3);
  // (C,H,W) = (2,2,3)
  const Bytes image = {1, 2, 3, 4, 5, 6, 10, 20, 30, 40, 50, 60};
  expect_near_all(run(a, image, {0, 0, true}, 12),
                  scaled({3, 2, 1, 6, 5, 4, 30, 20, 10, 60, 50, 40}));
  expect_near_all(run(a, image, {0, 0, false}, 12),
                  scaled({1, 2, 3, 4, 5, 6, 10, 20, 30, 40, 50, 60}));
}

TEST(Augment, CropWithPaddingPutsZerosAtTheBorder) {
  AugmentConfig config;
  config.crop_padding = 2;
  const Augmenter a(config, 1, 3, 4);
  const Bytes image = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // (3,4)
  // Offset (0, 0) of the padded image: the image moves 2 down and 2 right.
  expect_near_all(run(a, image, {0, 0, false}, 12), scaled({0, 0, 0, 0,  //
                                                            0, 0, 0, 0,  //
                                                            0, 0, 1, 2}));
  // Offset (2P, 2P): 2 up and 2 left.
  expect_near_all(run(a, image, {4, 4, false}, 12), scaled({11, 12, 0, 0,  //
                                                            0, 0, 0, 0,    //
                                                            0, 0, 0, 0}));
  // Offset (P, P) is the image itself; (P, P+1) shifts it one left.
  expect_near_all(run(a, image, {2, 2, false}, 12),
                  scaled({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  expect_near_all(run(a, image, {2, 3, false}, 12),
                  scaled({2, 3, 4, 0, 6, 7, 8, 0, 10, 11, 12, 0}));
  // Crop then flip: the flipped crop (1, 3).
  expect_near_all(run(a, image, {1, 3, true}, 12), scaled({0, 0, 0, 0,  //
                                                           0, 4, 3, 2,  //
                                                           0, 8, 7, 6}));
}

TEST(Augment, NormalisationValues) {
  AugmentConfig config;
  config.normalize = dataset_stats("fashion_mnist");
  const Augmenter a(config, 1, 1, 3);
  const std::vector<float> out = run(a, {0, 255, 73}, {}, 3);
  EXPECT_NEAR(out[0], (0.0 - 0.2860) / 0.3530, 1e-5);  // -0.81020
  EXPECT_NEAR(out[1], (1.0 - 0.2860) / 0.3530, 1e-5);  // 2.02266
  EXPECT_NEAR(out[2], (73.0 / 255.0 - 0.2860) / 0.3530, 1e-5);
  EXPECT_NEAR(out[0], -0.810198, 1e-5);
  EXPECT_NEAR(out[1], 2.022663, 1e-5);

  AugmentConfig cifar;
  cifar.normalize = dataset_stats("cifar10");
  cifar.crop_padding = 1;
  const Augmenter c(cifar, 3, 1, 1);
  // One pixel per channel, all 128; offset (0, 0) makes the output the padding value.
  const std::vector<float> v = run(c, {128, 128, 128}, {1, 1, false}, 3);
  const double mean[3] = {0.4914, 0.4822, 0.4465};
  const double stddev[3] = {0.2470, 0.2435, 0.2616};
  for (int ch = 0; ch < 3; ++ch) {
    EXPECT_NEAR(v[static_cast<std::size_t>(ch)], (128.0 / 255.0 - mean[ch]) / stddev[ch], 1e-5);
  }
  const std::vector<float> pad = run(c, {128, 128, 128}, {0, 0, false}, 3);
  for (int ch = 0; ch < 3; ++ch) {
    EXPECT_NEAR(pad[static_cast<std::size_t>(ch)], -mean[ch] / stddev[ch], 1e-5);  // zero pixel
  }
}

// pad -> crop -> flip -> normalise, written plainly.
std::vector<float> reference(const Bytes& src, int64_t C, int64_t H, int64_t W, int64_t P,
                             const AugmentDraw& d, const std::vector<float>& mean,
                             const std::vector<float>& stddev) {
  std::vector<float> out(static_cast<std::size_t>(C * H * W));
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t y = 0; y < H; ++y) {
      for (int64_t x = 0; x < W; ++x) {
        const int64_t cx = d.flip ? W - 1 - x : x;  // column of the cropped image
        const int64_t sy = y + d.dy - P, sx = cx + d.dx - P;
        const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
        const double v = inside ? src[static_cast<std::size_t>((c * H + sy) * W + sx)] : 0.0;
        out[static_cast<std::size_t>((c * H + y) * W + x)] = static_cast<float>(
            (v / 255.0 - mean[static_cast<std::size_t>(c)]) / stddev[static_cast<std::size_t>(c)]);
      }
    }
  }
  return out;
}

TEST(Augment, EveryDrawMatchesThePlainReference) {
  const int64_t C = 3, H = 5, W = 6, P = 3;
  AugmentConfig config;
  config.crop_padding = P;
  config.horizontal_flip = true;
  config.normalize = {{0.1f, 0.5f, 0.9f}, {0.2f, 0.3f, 0.4f}};
  const Augmenter a(config, C, H, W);
  Bytes image(static_cast<std::size_t>(C * H * W));
  for (std::size_t i = 0; i < image.size(); ++i) image[i] = static_cast<std::uint8_t>(37 * i + 11);
  for (int64_t dy = 0; dy <= 2 * P; ++dy) {
    for (int64_t dx = 0; dx <= 2 * P; ++dx) {
      for (const bool flip : {false, true}) {
        const AugmentDraw d{dy, dx, flip};
        SCOPED_TRACE("dy " + std::to_string(dy) + " dx " + std::to_string(dx) +
                     (flip ? " flipped" : ""));
        expect_near_all(
            run(a, image, d, image.size()),
            reference(image, C, H, W, P, d, config.normalize.mean, config.normalize.std), 1e-5f);
      }
    }
  }
}

TEST(Augment, PaddingWiderThanTheImage) {
  AugmentConfig config;
  config.crop_padding = 5;
  const Augmenter a(config, 1, 2, 2);
  const Bytes image = {1, 2, 3, 4};
  for (int64_t d = 0; d <= 10; ++d) {
    const AugmentDraw draw{d, 10 - d, d % 2 == 0};
    expect_near_all(run(a, image, draw, 4), reference(image, 1, 2, 2, 5, draw, {0.0f}, {1.0f}));
  }
}

TEST(AugmentDraws, DeterministicPerSeedEpochIndex) {
  AugmentConfig config;
  config.crop_padding = 4;
  config.horizontal_flip = true;
  const Augmenter a(config, 3, 32, 32);
  const auto same = [](const AugmentDraw& x, const AugmentDraw& y) {
    return x.dy == y.dy && x.dx == y.dx && x.flip == y.flip;
  };
  EXPECT_TRUE(same(a.draw(1, 2, 3), a.draw(1, 2, 3)));
  // Changing any of (seed, epoch, index) changes the draws somewhere in a small range.
  int differ_seed = 0, differ_epoch = 0, differ_index = 0;
  for (int64_t i = 0; i < 50; ++i) {
    differ_seed += !same(a.draw(1, 2, i), a.draw(2, 2, i));
    differ_epoch += !same(a.draw(1, 2, i), a.draw(1, 3, i));
    differ_index += !same(a.draw(1, 2, i), a.draw(1, 2, i + 50));
  }
  EXPECT_GT(differ_seed, 40);
  EXPECT_GT(differ_epoch, 40);
  EXPECT_GT(differ_index, 40);
}

TEST(AugmentDraws, RangesAndFlipRate) {
  AugmentConfig config;
  config.crop_padding = 2;
  config.horizontal_flip = true;
  const Augmenter a(config, 1, 8, 8);
  std::set<int64_t> dys, dxs;
  int flips = 0;
  constexpr int kDraws = 20000;
  for (int64_t i = 0; i < kDraws; ++i) {
    const AugmentDraw d = a.draw(9, 0, i);
    ASSERT_GE(d.dy, 0);
    ASSERT_LE(d.dy, 4);
    ASSERT_GE(d.dx, 0);
    ASSERT_LE(d.dx, 4);
    dys.insert(d.dy);
    dxs.insert(d.dx);
    flips += d.flip;
  }
  EXPECT_EQ(dys.size(), 5u);
  EXPECT_EQ(dxs.size(), 5u);
  EXPECT_NEAR(static_cast<double>(flips) / kDraws, 0.5, 0.02);

  // Disabled parts draw nothing.
  const Augmenter none({}, 1, 8, 8);
  for (int64_t i = 0; i < 100; ++i) {
    const AugmentDraw d = none.draw(9, 0, i);
    EXPECT_EQ(d.dy, 0);
    EXPECT_EQ(d.dx, 0);
    EXPECT_FALSE(d.flip);
  }
  AugmentConfig flip_only;
  flip_only.horizontal_flip = true;
  const Augmenter f(flip_only, 1, 8, 8);
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(f.draw(9, 0, i).dy, 0);
}

TEST(AugmentStats, KnownDatasets) {
  const ChannelStats fm = dataset_stats("fashion_mnist");
  EXPECT_EQ(fm.mean, (std::vector<float>{0.2860f}));
  EXPECT_EQ(fm.std, (std::vector<float>{0.3530f}));
  EXPECT_EQ(dataset_stats("fashion-mnist").mean, fm.mean);
  const ChannelStats c10 = dataset_stats("cifar10");
  EXPECT_EQ(c10.mean, (std::vector<float>{0.4914f, 0.4822f, 0.4465f}));
  EXPECT_EQ(c10.std, (std::vector<float>{0.2470f, 0.2435f, 0.2616f}));
  EXPECT_EQ(dataset_stats("cifar100").mean.size(), 3u);
  EXPECT_EQ(dataset_stats("mnist").mean, (std::vector<float>{0.1307f}));
  expect_error<DatasetError>([] { dataset_stats("svhn"); },
                             {"unknown dataset \"svhn\"", "fashion_mnist", "cifar10"});
}

TEST(AugmentStats, DefaultRecipes) {
  const AugmentConfig train = default_augment("cifar10", true);
  EXPECT_EQ(train.crop_padding, 4);
  EXPECT_TRUE(train.horizontal_flip);
  EXPECT_EQ(train.normalize.mean.size(), 3u);
  const AugmentConfig eval = default_augment("cifar10", false);
  EXPECT_EQ(eval.crop_padding, 0);
  EXPECT_FALSE(eval.horizontal_flip);
  const AugmentConfig fm = default_augment("fashion_mnist", true);
  EXPECT_EQ(fm.crop_padding, 0);
  EXPECT_FALSE(fm.horizontal_flip);
  EXPECT_EQ(fm.normalize.mean, (std::vector<float>{0.2860f}));
}

TEST(AugmentErrors, BadConfigs) {
  AugmentConfig config;
  config.normalize = dataset_stats("cifar10");
  expect_error<ValueError>([&] { Augmenter(config, 1, 28, 28); },
                           {"3 mean values for 1-channel images"});
  config.normalize = {{0.5f}, {0.0f}};
  expect_error<ValueError>([&] { Augmenter(config, 1, 28, 28); }, {"std of channel 0", "> 0"});
  config.normalize = {};
  config.crop_padding = -1;
  expect_error<ValueError>([&] { Augmenter(config, 1, 28, 28); }, {"crop_padding", "-1"});
  expect_error<ValueError>([&] { Augmenter({}, 1, 0, 28); }, {"image shape"});
}

}  // namespace
}  // namespace pb::data
