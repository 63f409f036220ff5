// The optimizer registry: names, resolved hyperparameters as JSON, and the error messages for
// unknown names and unknown, missing or out-of-range hyperparameters.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/error.h"
#include "runtime/optim/optimizer.h"

namespace pb::optim {
namespace {

std::vector<NamedTensor> one_param() {
  return {{"w", zeros(Shape{3})}};
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_error(const OptimizerConfig& config, const std::string& fragment) {
  const std::string msg = error_of([&] { make_optimizer(config, one_param()); });
  EXPECT_NE(msg.find(fragment), std::string::npos) << "message: " << msg;
}

TEST(OptimizerRegistry, Names) {
  EXPECT_EQ(optimizer_names(),
            (std::vector<std::string>{"sgd", "momentum", "nesterov", "rmsprop", "adam", "nadam",
                                      "adamw", "lars", "lamb"}));
  for (const OptimizerInfo& info : optimizer_registry()) {
    auto opt = make_optimizer({info.name, {{"learning_rate", 0.1}}, {}}, one_param());
    EXPECT_EQ(opt->name(), info.name);
    EXPECT_EQ(static_cast<int>(info.slots.size()), kernels::optim_slot_count(info.rule));
  }
}

TEST(OptimizerRegistry, JsonHasResolvedHyperparameters) {
  auto opt =
      make_optimizer({"adam", {{"learning_rate", 3e-4}, {"beta2", 0.98}}, {"*.bias"}}, one_param());
  const nlohmann::json j = opt->to_json();
  EXPECT_EQ(j["name"], "adam");
  EXPECT_EQ(j["hyperparameters"]["learning_rate"], 3e-4);
  EXPECT_EQ(j["hyperparameters"]["beta1"], 0.9);  // default filled in
  EXPECT_EQ(j["hyperparameters"]["beta2"], 0.98);
  EXPECT_EQ(j["hyperparameters"]["epsilon"], 1e-8);
  EXPECT_EQ(j["hyperparameters"]["weight_decay"], 0.0);
  EXPECT_EQ(j["hyperparameters"]["no_decay_1d"], 0.0);
  EXPECT_EQ(j["no_decay_patterns"][0], "*.bias");
  EXPECT_EQ(j["step"], 0);
  // The text form parses back.
  EXPECT_EQ(nlohmann::json::parse(j.dump()), j);

  auto adamw = make_optimizer({"adamw", {{"learning_rate", 1e-3}}, {}}, one_param());
  EXPECT_EQ(adamw->hyperparameter("weight_decay"), 0.01);
  auto lars = make_optimizer({"lars", {{"learning_rate", 1.0}}, {}}, one_param());
  EXPECT_EQ(lars->hyperparameter("trust_coefficient"), 0.001);
  EXPECT_EQ(lars->hyperparameter("momentum"), 0.9);
}

TEST(OptimizerErrors, UnknownOptimizer) {
  expect_error({"adma", {{"learning_rate", 0.1}}, {}},
               "unknown optimizer 'adma' (did you mean 'adam'?); known optimizers: 'sgd', "
               "'momentum'");
  expect_error({"nesterv", {{"learning_rate", 0.1}}, {}}, "(did you mean 'nesterov'?)");
  expect_error({"adagrad", {{"learning_rate", 0.1}}, {}}, "unknown optimizer 'adagrad'; known");
}

TEST(OptimizerErrors, UnknownHyperparameter) {
  expect_error({"adam", {{"lerning_rate", 0.1}}, {}},
               "optimizer adam: unknown hyperparameter 'lerning_rate' (did you mean "
               "'learning_rate'?); it takes 'learning_rate', 'beta1', 'beta2', 'epsilon', "
               "'weight_decay', 'no_decay_1d'");
  // Aliases are accepted ("lr", "eps"), but a value given under two spellings is an error.
  expect_error({"adam", {{"learning_rate", 0.1}, {"lr", 0.1}}, {}},
               "optimizer adam: 'learning_rate' is given twice (as 'learning_rate' and 'lr')");
  EXPECT_EQ(make_optimizer({"adam", {{"lr", 0.25}, {"eps", 1e-6}}, {}}, one_param())
                ->hyperparameter("epsilon"),
            1e-6);
  expect_error({"adam", {{"learning_rate", 0.1}, {"epsilom", 1e-6}}, {}},
               "(did you mean 'epsilon'?)");
  expect_error({"adam", {{"learning_rate", 0.1}, {"beta3", 0.9}}, {}},
               "unknown hyperparameter 'beta3' (did you mean 'beta1'?)");
  // momentum is not an adam hyperparameter
  expect_error({"adam", {{"learning_rate", 0.1}, {"momentum", 0.9}}, {}},
               "unknown hyperparameter 'momentum'");
  expect_error({"sgd", {{"learning_rate", 0.1}, {"momentum", 0.9}}, {}},
               "optimizer sgd: unknown hyperparameter 'momentum'");
}

TEST(OptimizerErrors, MissingAndOutOfRange) {
  expect_error({"adam", {}, {}}, "optimizer adam: missing required hyperparameter 'learning_rate'");
  expect_error({"adam", {{"learning_rate", 0.1}, {"beta2", 1.5}}, {}},
               "optimizer adam: beta2 must be in [0, 1), got 1.5");
  expect_error({"adam", {{"learning_rate", 0.1}, {"beta1", 1.0}}, {}},
               "beta1 must be in [0, 1), got 1.0");
  expect_error({"momentum", {{"learning_rate", -0.1}}, {}}, "learning_rate must be > 0, got -0.1");
  expect_error({"sgd", {{"learning_rate", 0.1}, {"weight_decay", -1e-4}}, {}},
               "weight_decay must be >= 0, got -0.0001");
  expect_error({"lars", {{"learning_rate", 0.1}, {"trust_coefficient", 0}}, {}},
               "trust_coefficient must be > 0, got 0.0");
  expect_error({"sgd", {{"learning_rate", 0.1}, {"no_decay_1d", 0.5}}, {}},
               "no_decay_1d must be a bool (0 or 1), got 0.5");
  expect_error({"sgd", {{"learning_rate", std::nan("")}}, {}},
               "learning_rate must be a finite number, got nan");
  expect_error({"sgd", {{"learning_rate", 0.1}}, {""}}, "empty no_decay pattern");
}

TEST(OptimizerErrors, Parameters) {
  std::string msg = error_of([] { make_optimizer({"sgd", {{"learning_rate", 0.1}}, {}}, {}); });
  EXPECT_NE(msg.find("no parameters"), std::string::npos) << msg;
  msg = error_of([] {
    make_optimizer(
        {"sgd", {{"learning_rate", 0.1}}, {}},
        {{"w", zeros(Shape{2})}, {"v", zeros(Shape{2}, TensorOptions{}.with_dtype(DType::F64))}});
  });
  EXPECT_NE(msg.find("parameter 'v' is float64 on cpu but 'w' is float32 on cpu"),
            std::string::npos)
      << msg;
  msg = error_of([] {
    make_optimizer({"sgd", {{"learning_rate", 0.1}}, {}},
                   {{"w", zeros(Shape{2})}, {"w", zeros(Shape{2})}});
  });
  EXPECT_NE(msg.find("'w' appears twice"), std::string::npos) << msg;
  auto opt = make_optimizer({"sgd", {{"learning_rate", 0.1}}, {}}, one_param());
  msg = error_of([&] { opt->step(-1.0); });
  EXPECT_NE(msg.find("learning rate -1 must be finite and >= 0"), std::string::npos) << msg;
  msg = error_of([&] { opt->hyperparameter("momentum"); });
  EXPECT_NE(msg.find("no hyperparameter 'momentum'"), std::string::npos) << msg;
  msg = error_of([&] { opt->step(0.1, zeros(Shape{2})); });
  EXPECT_NE(msg.find("grad_scale must be one float32 element on cpu"), std::string::npos) << msg;
}

TEST(Hyperparameters, GlobMatch) {
  EXPECT_TRUE(glob_match("*.bias", "layer1.0.conv1.bias"));
  EXPECT_FALSE(glob_match("*.bias", "layer1.0.conv1.weight"));
  EXPECT_TRUE(glob_match("*bn*", "layer1.0.bn1.weight"));
  EXPECT_TRUE(glob_match("layer?.*", "layer4.2.bn3.bias"));
  EXPECT_FALSE(glob_match("layer?", "layer10"));
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("fc.weight", "fc.weight"));
}

}  // namespace
}  // namespace pb::optim
