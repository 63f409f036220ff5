// Learning-rate schedules: values at step 0, the end of warmup, a midpoint of the decay and the
// end of the decay (and beyond), each computed here from the formula in runtime/optim/schedule.h.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/core/error.h"
#include "runtime/optim/schedule.h"

namespace pb::optim {
namespace {

constexpr double kBase = 0.4;
constexpr double kTol = 1e-15;

Schedule make(const std::string& name, std::map<std::string, double> hp,
              std::map<std::string, std::vector<double>> lists = {}) {
  return make_schedule({name, std::move(hp), std::move(lists)}, kBase);
}

TEST(Schedule, Constant) {
  const Schedule s = make("constant", {});
  EXPECT_EQ(s(0), kBase);
  EXPECT_EQ(s(1), kBase);
  EXPECT_EQ(s(1000000), kBase);
  EXPECT_EQ(s.end_step(), 0);
}

// Linear warmup from 0: lr = base * step / W for step < W, then the decay runs on step - W.
TEST(Schedule, WarmupPrependedToConstant) {
  const Schedule s = make("constant", {{"warmup_steps", 100}});
  EXPECT_EQ(s(0), 0.0);
  EXPECT_NEAR(s(1), kBase / 100, kTol);
  EXPECT_NEAR(s(50), kBase / 2, kTol);
  EXPECT_NEAR(s(99), kBase * 0.99, kTol);
  EXPECT_EQ(s(100), kBase);  // end of warmup
  EXPECT_EQ(s(5000), kBase);
  EXPECT_EQ(s.end_step(), 100);
}

TEST(Schedule, Linear) {
  const Schedule s = make("linear", {{"decay_steps", 1000}, {"end_factor", 0.1}});
  EXPECT_EQ(s(0), kBase);
  EXPECT_NEAR(s(500), kBase * (1 - 0.9 * 0.5), kTol);
  EXPECT_NEAR(s(1000), kBase * 0.1, kTol);  // end of decay
  EXPECT_NEAR(s(5000), kBase * 0.1, kTol);  // held
  EXPECT_EQ(s.end_step(), 1000);
}

TEST(Schedule, LinearWithWarmupDecaysAfterWarmup) {
  const Schedule s = make("linear", {{"warmup_steps", 10}, {"decay_steps", 100}});
  EXPECT_EQ(s(0), 0.0);
  EXPECT_NEAR(s(5), kBase * 0.5, kTol);
  EXPECT_EQ(s(10), kBase);                // end of warmup: the decay starts at s = 0
  EXPECT_NEAR(s(60), kBase * 0.5, kTol);  // s = 50 of 100
  EXPECT_EQ(s(110), 0.0);                 // end of decay (end_factor 0)
  EXPECT_EQ(s(111), 0.0);
  EXPECT_EQ(s.end_step(), 110);
}

TEST(Schedule, CosineToFloor) {
  const double e = 0.05;
  const Schedule s =
      make("cosine", {{"warmup_steps", 20}, {"decay_steps", 200}, {"end_factor", e}});
  EXPECT_EQ(s(0), 0.0);
  EXPECT_NEAR(s(10), kBase * 0.5, kTol);
  EXPECT_NEAR(s(20), kBase, kTol);                         // end of warmup
  EXPECT_NEAR(s(120), kBase * (e + (1 - e) * 0.5), kTol);  // midpoint: cos(pi / 2) = 0
  EXPECT_NEAR(s(70), kBase * (e + (1 - e) * 0.5 * (1 + std::cos(std::numbers::pi / 4))), kTol);
  EXPECT_NEAR(s(220), kBase * e, kTol);  // end of decay: the floor
  EXPECT_NEAR(s(10000), kBase * e, kTol);
  EXPECT_EQ(s.end_step(), 220);
}

TEST(Schedule, Polynomial) {
  const Schedule s = make("polynomial", {{"decay_steps", 100}, {"power", 2}, {"end_factor", 0.2}});
  EXPECT_EQ(s(0), kBase);
  EXPECT_NEAR(s(50), kBase * (0.2 + 0.8 * 0.25), kTol);
  EXPECT_NEAR(s(100), kBase * 0.2, kTol);
  EXPECT_NEAR(s(1000), kBase * 0.2, kTol);
  // power 1 is linear
  const Schedule lin = make("polynomial", {{"decay_steps", 100}});
  EXPECT_NEAR(lin(25), kBase * 0.75, kTol);
}

TEST(Schedule, InverseSqrt) {
  // timescale defaults to the warmup length: base * sqrt(W / step) after warmup (Vaswani et al.).
  const Schedule s = make("inverse_sqrt", {{"warmup_steps", 100}});
  EXPECT_EQ(s(0), 0.0);
  EXPECT_NEAR(s(50), kBase * 0.5, kTol);
  EXPECT_EQ(s(100), kBase);  // end of warmup
  EXPECT_NEAR(s(400), kBase * std::sqrt(100.0 / 400.0), kTol);
  EXPECT_NEAR(s(10000), kBase * 0.1, kTol);
  EXPECT_EQ(s.hyperparameters().at("timescale"), 100.0);
  EXPECT_EQ(s.end_step(), 0);
  const Schedule t = make("inverse_sqrt", {{"timescale", 10}});
  EXPECT_EQ(t(0), kBase);
  EXPECT_NEAR(t(30), kBase * 0.5, kTol);
}

TEST(Schedule, Step) {
  const Schedule s = make("step", {{"step_size", 30}, {"gamma", 0.5}});
  EXPECT_EQ(s(0), kBase);
  EXPECT_EQ(s(29), kBase);
  EXPECT_EQ(s(30), kBase * 0.5);
  EXPECT_EQ(s(65), kBase * 0.25);
}

TEST(Schedule, PiecewiseConstant) {
  const Schedule s = make("piecewise_constant", {{"warmup_steps", 5}},
                          {{"boundaries", {100, 200}}, {"factors", {1.0, 0.1, 0.01}}});
  EXPECT_EQ(s(0), 0.0);
  EXPECT_EQ(s(5), kBase);                   // end of warmup
  EXPECT_EQ(s(104), kBase);                 // s = 99
  EXPECT_NEAR(s(105), kBase * 0.1, kTol);   // s = 100: first boundary
  EXPECT_NEAR(s(150), kBase * 0.1, kTol);   // midpoint
  EXPECT_NEAR(s(205), kBase * 0.01, kTol);  // end
  EXPECT_NEAR(s(99999), kBase * 0.01, kTol);
  EXPECT_EQ(s.end_step(), 205);
}

// The playbook's warmup experiment: ramp from 0 to base over warmup_steps, then constant for
// post_warmup_steps (default 2 * warmup_steps).
TEST(Schedule, PlaybookWarmupExperiment) {
  const Schedule s = make("playbook_warmup", {{"warmup_steps", 1000}});
  EXPECT_EQ(s(0), 0.0);
  EXPECT_NEAR(s(500), kBase * 0.5, kTol);
  EXPECT_EQ(s(1000), kBase);
  EXPECT_EQ(s(2000), kBase);  // midpoint of the constant phase
  EXPECT_EQ(s(2999), kBase);
  EXPECT_EQ(s.hyperparameters().at("post_warmup_steps"), 2000.0);
  EXPECT_EQ(s.end_step(), 3000);
  const Schedule t = make("playbook_warmup", {{"warmup_steps", 10}, {"post_warmup_steps", 5}});
  EXPECT_EQ(t.end_step(), 15);
}

TEST(Schedule, Json) {
  const Schedule s = make("cosine", {{"decay_steps", 10}});
  const nlohmann::json j = s.to_json();
  EXPECT_EQ(j["name"], "cosine");
  EXPECT_EQ(j["base_learning_rate"], kBase);
  EXPECT_EQ(j["hyperparameters"]["decay_steps"], 10.0);
  EXPECT_EQ(j["hyperparameters"]["end_factor"], 0.0);
  EXPECT_EQ(j["hyperparameters"]["warmup_steps"], 0.0);
  EXPECT_EQ(j["end_step"], 10);
}

// ---- errors
// ---------------------------------------------------------------------------------------

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ScheduleErrors, UnknownNameSuggests) {
  const std::string msg = error_of([] { make("cosin", {}); });
  EXPECT_NE(msg.find("unknown schedule 'cosin'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'cosine'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'playbook_warmup'"), std::string::npos) << msg;  // lists the known ones
}

TEST(ScheduleErrors, BadHyperparameters) {
  std::string msg = error_of([] { make("cosine", {{"decay_step", 10}}); });
  EXPECT_NE(msg.find("unknown hyperparameter 'decay_step'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'decay_steps'"), std::string::npos) << msg;

  // decay_steps = 0 (the default) runs the decay to the end of training, which only a caller
  // that knows the training length can resolve.
  msg = error_of([] { make("cosine", {}); });
  EXPECT_NE(msg.find("decay_steps = 0 means 'until the end of training'"), std::string::npos)
      << msg;
  EXPECT_EQ(make_schedule({"cosine", {{"warmup_steps", 10}}, {}}, kBase, 110)
                .hyperparameters()
                .at("decay_steps"),
            100.0);
  msg = error_of([] { make("step", {}); });
  EXPECT_NE(msg.find("missing required hyperparameter 'step_size'"), std::string::npos) << msg;

  msg = error_of([] { make("linear", {{"decay_steps", 10}, {"warmup_steps", 2.5}}); });
  EXPECT_NE(msg.find("warmup_steps must be a whole number, got 2.5"), std::string::npos) << msg;

  msg = error_of([] { make("cosine", {{"decay_steps", 10}, {"end_factor", 1.5}}); });
  EXPECT_NE(msg.find("schedule cosine: end_factor must be in [0, 1], got 1.5"), std::string::npos)
      << msg;

  msg = error_of([] { make("linear", {{"decay_steps", -5}}); });
  EXPECT_NE(msg.find("decay_steps must be >= 0, got -5"), std::string::npos) << msg;

  msg = error_of([] { make("constant", {{"warmup_steps", -1}}); });
  EXPECT_NE(msg.find("warmup_steps must be >= 0, got -1"), std::string::npos) << msg;

  msg = error_of([] { make_schedule({"constant", {}, {}}, -0.1); });
  EXPECT_NE(msg.find("base learning rate -0.1"), std::string::npos) << msg;

  msg = error_of([] { make("constant", {})(-1); });
  EXPECT_NE(msg.find("step -1 is negative"), std::string::npos) << msg;
}

TEST(ScheduleErrors, PiecewiseLists) {
  std::string msg = error_of([] {
    make("piecewise_constant", {}, {{"boundaries", {10, 5}}, {"factors", {1, 0.1, 0.01}}});
  });
  EXPECT_NE(msg.find("strictly increasing"), std::string::npos) << msg;
  msg = error_of([] { make("piecewise_constant", {}, {{"boundaries", {10}}, {"factors", {1}}}); });
  EXPECT_NE(msg.find("1 factors for 1 boundaries"), std::string::npos) << msg;
  msg = error_of([] { make("piecewise_constant", {}, {{"boundaries", {10}}}); });
  EXPECT_NE(msg.find("missing required list 'factors'"), std::string::npos) << msg;
  msg = error_of([] {
    make("piecewise_constant", {}, {{"boundary", {10}}, {"factors", {1, 0.1}}});
  });
  EXPECT_NE(msg.find("unknown list 'boundary' (did you mean 'boundaries'?)"), std::string::npos)
      << msg;
  msg = error_of([] { make("cosine", {{"decay_steps", 1}}, {{"factors", {1}}}); });
  EXPECT_NE(msg.find("it takes no lists"), std::string::npos) << msg;
}

}  // namespace
}  // namespace pb::optim
