// A value the user writes is the value that runs. For every optimizer and every key it takes, and
// for every schedule, clipping and EMA key, each of these values is written into a config:
//   (a) a value no registry uses as a default,
//   (b) exactly the key's own default (the chosen optimizer's or schedule's),
//   (c) every other optimizer's (schedule's) default for the same key,
// and a one-step run checks that the effective hyperparameters (summary.json's optimizer /
// schedule / clip / ema objects, written from the live objects), the resolved config.toml and
// summary.json's config all hold exactly what was written. Before this test existed, (b) and (c)
// were dropped whenever the value equalled the first registered optimizer's default: rmsprop with
// momentum = 0.9 ran with momentum 0, lamb with epsilon = 1e-8 ran with 1e-6.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/config/config.h"
#include "train/config.h"
#include "train/trainer.h"

namespace pb::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// A one-step MLP job on a tiny synthetic dataset.
const std::vector<std::string> kTinyJob = {
    "model.name=mlp",
    "model.hidden=[4]",
    "model.norm=none",
    "data.dataset=synthetic",
    "data.synthetic_shape=[1,3,3]",
    "data.synthetic_classes=3",
    "data.synthetic_count=48",
    "data.validation_size=8",
    "data.workers=0",
    "train.batch_size=8",
    "train.eval_batch_size=8",
    "train.max_train_steps=2",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.device=cpu",
    "optimizer.learning_rate=0.05",
};

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("pb_resolution_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static inline int counter = 0;
};

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The value text of `name = ...` inside `[section]` of a TOML text (comments skipped).
std::string toml_value(const std::string& toml, const std::string& section,
                       const std::string& name) {
  std::istringstream in(toml);
  std::string line, current;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      current = line.substr(1, line.find(']') - 1);
      continue;
    }
    if (current == section && line.rfind(name + " = ", 0) == 0) return line.substr(name.size() + 3);
  }
  return "<absent>";
}

struct Outcome {
  json summary;
  std::string config_toml;
  std::string metrics;
  std::string log;
};

Outcome run_one(const std::vector<std::string>& extra) {
  std::vector<std::string> overrides = kTinyJob;
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  const config::Config c = resolve_text("", "test", overrides);
  TempDir dir;
  std::ostringstream log;
  TrainOptions options;
  options.out_dir = dir.path / "run";
  options.log = &log;
  train(c, "test", options);
  Outcome o;
  o.summary = json::parse(read(options.out_dir / "summary.json"));
  o.config_toml = read(options.out_dir / "config.toml");
  o.metrics = read(options.out_dir / "metrics.jsonl");
  o.log = log.str();
  return o;
}

// The number as written in TOML by config::format_value.
std::string toml_number(const config::KeySpec& spec, double v) {
  if (spec.type == config::Type::Bool) return v != 0 ? "true" : "false";
  if (spec.type == config::Type::Int) return config::format_value(static_cast<int64_t>(v));
  return config::format_value(v);
}

double default_of(const config::KeySpec& spec) {
  const config::Value& d = *spec.default_value;
  if (const auto* b = std::get_if<bool>(&d)) return *b ? 1 : 0;
  if (const auto* i = std::get_if<int64_t>(&d)) return static_cast<double>(*i);
  return std::get<double>(d);
}

// (a), (b) and (c) for one key: `defaults` holds the key's default under every registry entry
// that declares it.
std::vector<double> values_to_try(const config::KeySpec& spec,
                                  const std::vector<double>& defaults) {
  std::set<double> out(defaults.begin(), defaults.end());
  if (spec.type == config::Type::Bool) return {0, 1};
  // (a) a value nobody has as a default, inside the key's range.
  double fresh = spec.type == config::Type::Int ? 3 : 0.37;
  if (spec.upper && fresh >= spec.upper->value) fresh = spec.upper->value * 0.5;
  if (spec.lower && fresh <= spec.lower->value) fresh = spec.lower->value + 1;
  out.insert(fresh);
  std::vector<double> in_range;
  for (double v : out) {
    const bool low_ok =
        !spec.lower || (spec.lower->inclusive ? v >= spec.lower->value : v > spec.lower->value);
    const bool high_ok =
        !spec.upper || (spec.upper->inclusive ? v <= spec.upper->value : v < spec.upper->value);
    if (low_ok && high_ok) in_range.push_back(v);
  }
  return in_range;
}

template <typename Info>
std::map<std::string, std::vector<double>> defaults_by_key(const std::vector<Info>& registry) {
  std::map<std::string, std::vector<double>> out;
  for (const Info& info : registry) {
    for (const config::KeySpec& spec : info.hyperparameters) {
      if (spec.default_value) out[spec.key].push_back(default_of(spec));
    }
  }
  return out;
}

TEST(Resolution, EveryOptimizerKeyRunsWithTheWrittenValue) {
  const auto defaults = defaults_by_key(optim::optimizer_registry());
  int runs = 0;
  for (const optim::OptimizerInfo& info : optim::optimizer_registry()) {
    for (const config::KeySpec& spec : info.hyperparameters) {
      std::vector<double> values = spec.key == "learning_rate"
                                       ? std::vector<double>{0.01, 0.37}
                                       : values_to_try(spec, defaults.at(spec.key));
      for (double v : values) {
        SCOPED_TRACE(fmt::format("optimizer {} {} = {}", info.name, spec.key, v));
        const std::string text = toml_number(spec, v);
        std::vector<std::string> set = {"optimizer.name=" + info.name,
                                        "optimizer." + spec.key + "=" + text};
        if (spec.key != "learning_rate") set.push_back("optimizer.learning_rate=0.01");
        const Outcome o = run_one(set);
        EXPECT_EQ(o.summary["optimizer"]["name"], info.name);
        EXPECT_EQ(o.summary["optimizer"]["hyperparameters"][spec.key].get<double>(), v);
        EXPECT_EQ(toml_value(o.config_toml, "optimizer", spec.key), text);
        const json& written = o.summary["config"]["optimizer"][spec.key];
        EXPECT_EQ(written.is_boolean() ? (written.get<bool>() ? 1.0 : 0.0) : written.get<double>(),
                  v);
        // The resolved config lists only the keys this optimizer takes.
        for (const auto& entry : defaults) {
          const std::string& key = entry.first;  // (clang 14 cannot capture a structured binding)
          const bool takes = std::any_of(info.hyperparameters.begin(), info.hyperparameters.end(),
                                         [&](const config::KeySpec& s) { return s.key == key; });
          EXPECT_EQ(toml_value(o.config_toml, "optimizer", key) != "<absent>", takes) << key;
        }
        ++runs;
      }
    }
  }
  EXPECT_GT(runs, 100);
}

TEST(Resolution, EveryScheduleKeyRunsWithTheWrittenValue) {
  const auto defaults = defaults_by_key(optim::schedule_registry());
  for (const optim::ScheduleInfo& info : optim::schedule_registry()) {
    for (const config::KeySpec& spec : info.hyperparameters) {
      std::vector<double> values = defaults.count(spec.key)
                                       ? values_to_try(spec, defaults.at(spec.key))
                                       : std::vector<double>{2, 3};
      for (double v : values) {
        // Values that stand for a derived one (decay_steps = 0: until the end) are checked below.
        if (v == 0 && (spec.key == "decay_steps" || spec.key == "timescale" ||
                       spec.key == "post_warmup_steps")) {
          continue;
        }
        if (spec.key == "warmup_steps" && v >= 2) continue;  // must stay below the 2-step budget
        SCOPED_TRACE(fmt::format("schedule {} {} = {}", info.name, spec.key, v));
        std::vector<std::string> set = {"schedule.name=" + info.name,
                                        "schedule." + spec.key + "=" + toml_number(spec, v)};
        if (info.name == "step" && spec.key != "step_size") set.push_back("schedule.step_size=1");
        if (info.name == "playbook_warmup" && spec.key != "warmup_steps") {
          set.push_back("schedule.warmup_steps=1");
        }
        if (info.name == "piecewise_constant") {
          set.push_back("schedule.boundaries=[1]");
          set.push_back("schedule.factors=[1, 0.5]");
        }
        const Outcome o = run_one(set);
        EXPECT_EQ(o.summary["schedule"]["name"], info.name);
        EXPECT_EQ(o.summary["schedule"]["hyperparameters"][spec.key].get<double>(), v);
        EXPECT_EQ(toml_value(o.config_toml, "schedule", spec.key), toml_number(spec, v));
        EXPECT_EQ(o.summary["config"]["schedule"][spec.key].get<double>(), v);
      }
    }
  }
}

TEST(Resolution, DerivedScheduleValuesAreWrittenAsTheyRan) {
  // decay_steps = 0 means "until the end of training": config.toml shows the steps it ran with.
  const Outcome o = run_one({"schedule.name=cosine", "schedule.warmup_steps=1"});
  EXPECT_EQ(o.summary["schedule"]["hyperparameters"]["decay_steps"].get<double>(), 1.0);
  EXPECT_EQ(toml_value(o.config_toml, "schedule", "decay_steps"), "1");
  // Reading the resolved config back gives the same config.
  const config::Config again = resolve_text(o.config_toml, "config.toml");
  EXPECT_EQ(again.to_toml(), o.config_toml);
}

TEST(Resolution, ClipAndEmaKeysRunWithTheWrittenValue) {
  for (const auto& [section, keys] : {std::pair{std::string("clip"), optim::clip_keys()},
                                      std::pair{std::string("ema"), optim::ema_keys()}}) {
    for (const config::KeySpec& spec : keys) {
      for (double v : values_to_try(spec, {default_of(spec)})) {
        SCOPED_TRACE(fmt::format("{}.{} = {}", section, spec.key, v));
        std::vector<std::string> set = {section + "." + spec.key + "=" + toml_number(spec, v)};
        if (section == "ema" && spec.key == "warmup") set.push_back("ema.decay=0.5");
        if (section == "clip" && spec.key == "clip_update") set.push_back("clip.max_norm=0.5");
        const Outcome o = run_one(set);
        EXPECT_EQ(toml_value(o.config_toml, section, spec.key), toml_number(spec, v));
        const json& written = o.summary["config"][section][spec.key];
        EXPECT_EQ(written.is_boolean() ? (written.get<bool>() ? 1.0 : 0.0) : written.get<double>(),
                  v);
        // The live objects: the clipper's threshold and target, the EMA's decay.
        if (section == "clip" && spec.key == "max_norm") {
          EXPECT_EQ(o.summary["clip"]["max_norm"].get<double>(), v);
        }
        if (section == "clip" && spec.key == "clip_update") {
          EXPECT_EQ(o.summary["clip"]["target"], v != 0 ? "update" : "gradient");
        }
        if (section == "ema" && spec.key == "decay") {
          if (v == 0) {
            EXPECT_TRUE(o.summary["ema"].is_null());
          } else {
            EXPECT_EQ(o.summary["ema"]["decay"].get<double>(), v);
          }
        }
        if (section == "ema" && spec.key == "warmup") {
          EXPECT_EQ(o.summary["ema"]["warmup"].get<bool>(), v != 0);
        }
      }
    }
  }
}

TEST(Resolution, AliasesAreAcceptedAndUnknownKeysSuggestTheNearest) {
  const config::Config c = resolve_text(
      "", "test",
      {"optimizer.lr=0.1", "optimizer.name=adam", "optimizer.eps=1e-3", "train.clip_norm=2"});
  EXPECT_EQ(c.get<double>("optimizer.learning_rate"), 0.1);
  EXPECT_EQ(c.get<double>("optimizer.epsilon"), 1e-3);
  EXPECT_EQ(c.get<double>("clip.max_norm"), 2.0);
  EXPECT_EQ(c.source("optimizer.learning_rate"), config::Source::Override);

  auto message = [](const std::vector<std::string>& set, std::string_view text = "") {
    try {
      resolve_text(text, "test.toml", set);
    } catch (const config::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(message({"optimizer.learnig_rate=0.1"}),
            "--set optimizer.learnig_rate=0.1: unknown key 'optimizer.learnig_rate' (did you mean "
            "'optimizer.learning_rate'?)");
  EXPECT_EQ(message({}, "[optimizer]\nmomentun = 0.5\n"),
            "test.toml: unknown key 'optimizer.momentun' (did you mean 'optimizer.momentum'?)");
  EXPECT_EQ(message({"optimizer.beta2=0.99"}),
            "--set optimizer.beta2=0.99: optimizer.beta2 does not apply to optimizer 'momentum' "
            "(it takes: learning_rate, momentum, weight_decay, no_decay_1d)");
  EXPECT_EQ(message({"optimizer.name=sgd", "optimizer.mu=0.9"}),
            "--set optimizer.mu=0.9: optimizer.momentum does not apply to optimizer 'sgd' (it "
            "takes: learning_rate, weight_decay, no_decay_1d)");
  EXPECT_EQ(message({}, "[optimizer]\nlr = 0.1\nlearning_rate = 0.2\n"),
            "test.toml: optimizer.learning_rate is given twice (as 'optimizer.lr' and "
            "'optimizer.learning_rate')");
  EXPECT_EQ(message({"optimizer.name=adamm"}),
            "--set optimizer.name=adamm: optimizer.name must be one of 'sgd', 'momentum', "
            "'nesterov', 'rmsprop', 'adam', 'nadam', 'adamw', 'lars', 'lamb', got 'adamm' (did you "
            "mean 'adam'?)");
  EXPECT_EQ(message({"schedule.decay_step=10", "schedule.name=linear"}),
            "--set schedule.decay_step=10: unknown key 'schedule.decay_step' (did you mean "
            "'schedule.decay_steps'?)");
}

// Every cross-key rule fails in resolve(), which creates nothing; the e2e test
// TrainCli.CrossKeyErrorsCreateNothing checks the same through the command line.
TEST(Resolution, CrossKeyErrorsNameTheKeys) {
  struct Case {
    std::vector<std::string> set;
    std::vector<std::string> keys;
  };
  const std::vector<Case> cases = {
      {{"model.norm=ghost", "model.virtual_batch_size=3", "train.batch_size=8"},
       {"train.batch_size", "model.virtual_batch_size", "model.norm"}},
      {{"train.eval_batch_size=4"}, {"train.eval_batch_size", "train.batch_size"}},
      {{"train.checkpoint_every=3", "train.log_every=2"},
       {"train.checkpoint_every", "train.log_every"}},
      {{"schedule.name=cosine", "schedule.warmup_steps=2"},
       {"schedule.warmup_steps", "train.max_train_steps"}},
      {{"model.name=resnet", "model.norm=layer"}, {"model.norm", "model.name"}},
      {{"data.synthetic_shape=[1, 3]"}, {"data.synthetic_shape"}},
      {{"train.device=gpu"}, {"train.device"}},
      {{"schedule.name=piecewise_constant", "schedule.boundaries=[1, 1]",
        "schedule.factors=[1, 1, 1]"},
       {"schedule piecewise_constant", "boundaries"}},
  };
  for (const Case& c : cases) {
    std::vector<std::string> set = kTinyJob;
    set.insert(set.end(), c.set.begin(), c.set.end());
    try {
      resolve_text("", "study.toml", set);
      ADD_FAILURE() << "no error for " << fmt::format("{}", fmt::join(c.set, " "));
    } catch (const config::ConfigError& e) {
      for (const std::string& key : c.keys) {
        EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
      }
    }
  }
  // The ghost rule only applies when the virtual batch is smaller than the batch.
  std::vector<std::string> ok = kTinyJob;
  ok.insert(ok.end(), {"model.norm=ghost", "model.virtual_batch_size=64"});
  EXPECT_NO_THROW(resolve_text("", "test", ok));
}

TEST(Resolution, ValidationSizeZeroLogsNoValidation) {
  std::vector<std::string> set = {"data.validation_size=0"};
  const Outcome o = run_one(set);
  EXPECT_TRUE(o.summary["best_val_error"].is_null());
  EXPECT_TRUE(o.summary["final_val_error"].is_null());
  EXPECT_EQ(o.metrics.find("val_"), std::string::npos) << o.metrics;
  EXPECT_EQ(o.log.find("val_"), std::string::npos) << o.log;
  EXPECT_NE(o.metrics.find("train_loss"), std::string::npos);
}

}  // namespace
}  // namespace pb::train
