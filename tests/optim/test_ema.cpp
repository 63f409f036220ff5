// Exponential moving average of weights: the update formula, the warm-up of the decay, and
// swapping the averages into the model and back bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/error.h"
#include "runtime/optim/ema.h"

namespace pb::optim {
namespace {

using Vec = std::vector<double>;

TensorOptions f64() {
  return TensorOptions{}.with_dtype(DType::F64);
}

const std::vector<Vec> kValues = {{1.0, -2.0}, {3.0, 0.5}, {-1.0, 4.0}, {2.0, 2.0}};

TEST(Ema, UpdateFormula) {
  Tensor w = from_vector<double>(Vec{0.0, 1.0}, Shape{2}, f64());
  ExponentialMovingAverage ema({{"w", w}}, {0.9, false});
  Vec ref = {0.0, 1.0};  // starts as a copy of the parameters
  for (const Vec& v : kValues) {
    w.copy_(from_vector<double>(v, Shape{2}, f64()));
    ema.update();
    for (int i = 0; i < 2; ++i) ref[i] = 0.9 * ref[i] + (1.0 - 0.9) * v[i];
  }
  const Vec got = ema.averages()[0].second.to_vector<double>();
  for (int i = 0; i < 2; ++i) EXPECT_NEAR(got[i], ref[i], 1e-15);
  EXPECT_EQ(ema.num_updates(), 4);
  EXPECT_EQ(w.to_vector<double>(), kValues.back());  // the parameters are untouched
}

// d_t = min(decay, (1 + t) / (10 + t)), t = updates already applied.
TEST(Ema, WarmupOfTheDecay) {
  Tensor w = from_vector<double>(Vec{0.0}, Shape{1}, f64());
  ExponentialMovingAverage ema({{"w", w}}, {0.5, true});
  EXPECT_DOUBLE_EQ(ema.next_decay(), 0.1);  // (1 + 0) / (10 + 0)
  double ref = 0.0;
  for (int t = 0; t < 12; ++t) {
    const double d = std::min(0.5, (1.0 + t) / (10.0 + t));
    EXPECT_DOUBLE_EQ(ema.next_decay(), d) << t;
    w.copy_(from_vector<double>(Vec{static_cast<double>(t + 1)}, Shape{1}, f64()));
    ema.update();
    ref = d * ref + (1.0 - d) * static_cast<double>(t + 1);
  }
  EXPECT_NEAR(ema.averages()[0].second.to_vector<double>()[0], ref, 1e-13);
  EXPECT_EQ(ema.next_decay(), 0.5);  // (1 + 12) / 22 > 0.5
}

TEST(Ema, SwapIntoModelAndBackBitwise) {
  Tensor w = from_vector<float>(std::vector<float>{0.1f, 0.2f, 0.3f}, Shape{3});
  Tensor b = from_vector<float>(std::vector<float>{-1.0f}, Shape{1});
  ExponentialMovingAverage ema({{"w", w}, {"b", b}}, {0.99, false});
  w.copy_(from_vector<float>(std::vector<float>{1.0f, 2.0f, 3.0f}, Shape{3}));
  ema.update();
  const std::vector<float> live = w.to_vector<float>();
  const std::vector<float> avg = ema.averages()[0].second.to_vector<float>();
  {
    EmaSwap swapped(ema);
    EXPECT_TRUE(ema.swapped_in());
    EXPECT_EQ(w.to_vector<float>(), avg);  // the model evaluates with the averages
    EXPECT_THROW(ema.update(), ValueError);
    EXPECT_THROW(ema.state_dict(), ValueError);
    EXPECT_THROW(EmaSwap again(ema), ValueError);
  }
  EXPECT_FALSE(ema.swapped_in());
  const std::vector<float> back = w.to_vector<float>();
  EXPECT_EQ(std::memcmp(back.data(), live.data(), live.size() * sizeof(float)), 0);
  EXPECT_EQ(ema.averages()[0].second.to_vector<float>(), avg);
}

TEST(Ema, ConfigAndErrors) {
  const EmaConfig c = ema_config_from({{"decay", 0.9999}, {"warmup", 1}});
  EXPECT_EQ(c.decay, 0.9999);
  EXPECT_TRUE(c.warmup);
  try {
    ema_config_from({{"decay", 1.0}});
    FAIL() << "no error";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("ema: decay must be in [0, 1), got 1.0"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ema_config_from({{"decya", 0.9}}), ValueError);
  Tensor w = zeros(Shape{2});
  EXPECT_THROW(ExponentialMovingAverage({{"w", w}}, {1.5, false}), ValueError);
  ExponentialMovingAverage ema({{"w", w}}, {0.99, true});
  EXPECT_EQ(ema.to_json()["decay"], 0.99);
  EXPECT_EQ(ema.to_json()["warmup"], true);
}

}  // namespace
}  // namespace pb::optim
