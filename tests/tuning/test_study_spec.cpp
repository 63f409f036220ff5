// Study files: the trial -> parameters mapping (scrambled Halton points on linear, log and
// reverse-log scales, ints, scientific crossing), and one-line errors naming file and key for
// bad files, with the search space checked against a schema and a resolver.

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "runtime/config/config.h"
#include "tuning/study_spec.h"

namespace pb::tuning {
namespace {

namespace fs = std::filesystem;

StudySpec parse(const std::string& text, const TrainRules* rules = nullptr) {
  return parse_study(text, "study.toml", fs::temp_directory_path(), rules);
}

const char* kCommandHeader = "kind = \"command\"\ncommand = [\"true\"]\n";

// A small training schema and a resolver with one cross-key rule: beta2 only for adam.
struct FakeTrain {
  config::Schema schema;
  TrainRules rules;
  std::vector<std::vector<std::string>> calls;
  FakeTrain() {
    schema.add_string("optimizer.name", "momentum", "update rule").one_of({"momentum", "adam"});
    schema.add_float("optimizer.learning_rate", 0.1, "lr").greater_than(0);
    schema.add_float("optimizer.momentum", 0.9, "momentum").at_least(0).less_than(1);
    schema.add_float("optimizer.beta2", 0.999, "adam beta2").at_least(0).less_than(1);
    schema.add_int("train.batch_size", 128, "batch").at_least(1);
    schema.add_bool("train.deterministic", false, "det");
    rules.schema = &schema;
    rules.resolve = [this](const fs::path&, const std::vector<std::string>& overrides) {
      calls.push_back(overrides);
      std::string name = "momentum";
      bool beta2 = false;
      for (const std::string& o : overrides) {
        if (o.rfind("optimizer.name=", 0) == 0) name = o.substr(o.find('=') + 2, 4);
        if (o.rfind("optimizer.beta2=", 0) == 0) beta2 = true;
      }
      if (beta2 && name != "adam") {
        throw config::ConfigError(
            "--set optimizer.beta2=0.9: optimizer.beta2 does not apply to "
            "optimizer 'momentum'");
      }
    };
  }
};

std::string train_header() {
  // base must exist: the study's directory is the temp dir; use a file that is always there.
  const fs::path base = fs::temp_directory_path() / "pb_study_spec_base.toml";
  if (!fs::exists(base)) std::ofstream(base) << "\n";
  return "base = \"pb_study_spec_base.toml\"\n";
}

void expect_study_error(const std::string& text, const std::string& expected,
                        const TrainRules* rules = nullptr) {
  try {
    parse(text, rules);
    ADD_FAILURE() << "expected a StudyError: " << expected;
  } catch (const StudyError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    EXPECT_EQ(what.rfind("study.toml:", 0), 0u) << what;
    EXPECT_NE(what.find(expected), std::string::npos) << "got: " << what;
  }
}

TEST(StudySpec, TrialsAreHaltonPointsOnEachScale) {
  const StudySpec spec = parse(std::string(kCommandHeader) + R"(
trials = 20
seed = 11
[search.lr]
scale = "log"
min = 1e-4
max = 1.0
[search.beta2]
scale = "reverse_log"
min = 0.9
max = 0.9999
[search.width]
min = -2.0
max = 3.0
[search.layers]
min = 1
max = 4
)");
  ASSERT_EQ(spec.search.size(), 4u);
  EXPECT_EQ(spec.search[3].type, ParamType::Int);
  EXPECT_EQ(spec.total_trials(), 20);
  const HaltonSequence halton(4, HaltonOptions{.seed = 11});
  std::map<std::int64_t, int> layer_counts;
  for (uint64_t i = 0; i < 20; ++i) {
    const Params p = trial_params(spec, i);
    ASSERT_EQ(p.size(), 4u);
    const std::vector<double> u = halton.point(i);
    EXPECT_EQ(p[0].name, "lr");
    EXPECT_DOUBLE_EQ(std::get<double>(p[0].value), std::exp(std::lerp(std::log(1e-4), 0.0, u[0])));
    EXPECT_DOUBLE_EQ(std::get<double>(p[1].value),
                     1 - std::exp(std::lerp(std::log1p(-0.9), std::log1p(-0.9999), u[1])));
    EXPECT_DOUBLE_EQ(std::get<double>(p[2].value), -2.0 + 5.0 * u[2]);
    const auto layers = std::get<std::int64_t>(p[3].value);
    EXPECT_EQ(layers, 1 + static_cast<std::int64_t>(std::floor(4.0 * u[3])));
    ++layer_counts[layers];
  }
  // Ints cover [min, max] inclusive.
  EXPECT_EQ(layer_counts.size(), 4u);
  EXPECT_TRUE(layer_counts.count(1) && layer_counts.count(4));
}

TEST(StudySpec, ScientificValuesAreCrossedWithTheSameNuisancePoints) {
  const StudySpec spec = parse(std::string(kCommandHeader) + R"(
trials = 5
[search.opt]
role = "scientific"
values = ["a", "b", "c"]
[search.lr]
scale = "log"
min = 0.001
max = 1.0
[search.wd]
role = "fixed"
value = 0.5
)");
  EXPECT_EQ(spec.scientific_combinations(), 3);
  EXPECT_EQ(spec.total_trials(), 15);
  EXPECT_EQ(spec.fixed, std::vector<std::string>{"wd=0.5"});
  std::map<std::string, std::set<double>> lrs;
  for (uint64_t i = 0; i < 15; ++i) {
    const Params p = trial_params(spec, i);
    ASSERT_EQ(p.size(), 2u);
    EXPECT_EQ(std::get<std::string>(p[0].value), std::string(1, static_cast<char>('a' + i % 3)));
    lrs[std::get<std::string>(p[0].value)].insert(std::get<double>(p[1].value));
  }
  // Every scientific value gets the same 5 nuisance points.
  ASSERT_EQ(lrs.size(), 3u);
  EXPECT_EQ(lrs["a"].size(), 5u);
  EXPECT_EQ(lrs["a"], lrs["b"]);
  EXPECT_EQ(lrs["a"], lrs["c"]);
}

TEST(StudySpec, OverridesAndDottedTables) {
  const StudySpec spec = parse(std::string(kCommandHeader) + R"(
trials = 2
overrides = ["train.max_train_steps=300"]
[fixed]
train.deterministic = true
model.hidden = [64, 32]
optimizer.name = "sgd"
[search.optimizer.learning_rate]
values = [0.1, 1]
)");
  EXPECT_EQ(spec.fixed,
            (std::vector<std::string>{"train.max_train_steps=300", "train.deterministic=true",
                                      "model.hidden=[64, 32]", "optimizer.name=\"sgd\""}));
  ASSERT_EQ(spec.search.size(), 1u);
  EXPECT_EQ(spec.search[0].key, "optimizer.learning_rate");
  EXPECT_EQ(spec.objective.metric, "objective");
  const auto o = trial_overrides(spec, trial_params(spec, 0));
  EXPECT_EQ(o.back().rfind("optimizer.learning_rate=", 0), 0u);
}

// `store`: a PostgreSQL URL as written, a SQLite file relative to the study file; anything
// else is a one-line error naming the key (and not echoing a URL that may hold a password).
TEST(StudySpec, StoreIsAPostgresUrlOrASqlitePath) {
  const std::string h = std::string(kCommandHeader) + "trials = 2\n[search.x]\nvalues = [1]\n";
  EXPECT_EQ(parse(h).store, "");
  EXPECT_EQ(parse("store = \"postgresql://me@db-host:5433/resnet\"\n" + h).store,
            "postgresql://me@db-host:5433/resnet");
  EXPECT_EQ(parse("store = \"postgres://me@db-host/resnet\"\n" + h).store,
            "postgres://me@db-host/resnet");
  const fs::path origin = fs::temp_directory_path();
  EXPECT_EQ(parse("store = \"runs/../study.db\"\n" + h).store, (origin / "study.db").string());
  EXPECT_EQ(parse("store = \"sqlite://runs/s.db\"\n" + h).store, (origin / "runs/s.db").string());
  EXPECT_EQ(parse("store = \"/shared/s.db\"\n" + h).store, "/shared/s.db");
  expect_study_error("store = \"mysql://me:hunter2@h/db\"\n" + h,
                     "study.toml: store: unknown scheme 'mysql://': use \"postgresql://user@host/"
                     "db\" or the path of a SQLite file");
  try {
    parse("store = \"mysql://me:hunter2@h/db\"\n" + h);
  } catch (const StudyError& e) {
    EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos) << e.what();
  }
  expect_study_error("store = \"postgresql://\"\n" + h, "store: unknown scheme 'postgresql://'");
  expect_study_error("store = \"\"\n" + h, "study.toml: store: must not be empty");
  expect_study_error("store = 5\n" + h, "study.toml: store: must be a string");
  expect_study_error("stor = \"x.db\"\n" + h, "stor: unknown key (did you mean 'store'?)");
}

TEST(StudySpec, BadFilesGiveOneLineNamingFileAndKey) {
  const std::string h = std::string(kCommandHeader) + "trials = 4\n";
  expect_study_error(h + "[search.lr]\nscale = \"logg\"\nmin = 1\nmax = 2\n",
                     "search.lr.scale: 'logg' is not one of linear, log, reverse_log (did you "
                     "mean 'log'?)");
  expect_study_error(h + "[search.lr]\nmin = 2.0\nmax = 2.0\n", "search.lr: empty range");
  expect_study_error(h + "[search.lr]\nscale = \"log\"\nmin = 0.0\nmax = 2.0\n",
                     "search.lr: log scale needs min > 0");
  expect_study_error(h + "[search.b]\nscale = \"reverse_log\"\nmin = 0.5\nmax = 1.0\n",
                     "search.b: reverse_log scale");
  expect_study_error(h + "[search.opt]\nvalues = []\n",
                     "search.opt.values: categorical with no values");
  expect_study_error(h + "[search.opt]\ntype = \"categorical\"\nmin = 1\nmax = 2\n",
                     "search.opt: categorical with no values");
  expect_study_error(h + "[search.lr]\nmin = 1\nmaxx = 2\n",
                     "search.lr.maxx: unknown field (did you mean 'max'?)");
  expect_study_error(h + "[search.lr]\nrole = \"scientific\"\nmin = 1.0\nmax = 2.0\n",
                     "search.lr: a scientific dimension needs values");
  expect_study_error(std::string(kCommandHeader) + "trails = 4\n[search.x]\nvalues = [1]\n",
                     "study.toml: trails: unknown key (did you mean 'trials'?)");
  expect_study_error(std::string(kCommandHeader) + "[search.x]\nvalues = [1]\n", "trials: missing");
  expect_study_error(h, "search: missing");
  expect_study_error("trials = 3\n[search.x]\nvalues = [1]\n", "base: a train study needs base");
  expect_study_error(h + "[objective]\ngoal = \"minimise\"\n",
                     "objective.goal: 'minimise' is not one of minimize, maximize (did you mean "
                     "'minimize'?)");
  expect_study_error(h + "[search.x]\nvalues = [1\n", "study.toml:");  // TOML syntax error
}

TEST(StudySpec, SearchSpaceIsValidatedAgainstTheSchema) {
  FakeTrain fake;
  const std::string h = train_header() + "trials = 4\n";
  expect_study_error(
      h + "[search.optimizer.learing_rate]\nscale = \"log\"\nmin = 0.01\nmax = 1.0\n",
      "study.toml: search.optimizer.learing_rate: unknown key (did you mean "
      "'optimizer.learning_rate'?)",
      &fake.rules);
  expect_study_error(h + "[search.optimizer.momentum]\nmin = 0.5\nmax = 1.5\n",
                     "search.optimizer.momentum: max 1.5 is out of range: optimizer.momentum "
                     "must be in [0, 1)",
                     &fake.rules);
  expect_study_error(h + "[search.optimizer.name]\nvalues = [\"momentum\", \"adamw\"]\n",
                     "search.optimizer.name: 'adamw' is not one of momentum, adam (did you mean "
                     "'adam'?)",
                     &fake.rules);
  expect_study_error(h + "[search.train.batch_size]\nvalues = [32, 64.5]\n",
                     "search.train.batch_size: value 64.5 is not an int", &fake.rules);
  expect_study_error(h + "[fixed]\ntrain.determinstic = true\n[search.optimizer.momentum]\nmin = "
                         "0.5\nmax = 0.9\n",
                     "fixed.train.determinstic: unknown key (did you mean 'train.deterministic'?)",
                     &fake.rules);
  // A key the chosen optimizer does not take fails at every value: an error before any trial.
  expect_study_error(h + "[search.optimizer.beta2]\nscale = \"reverse_log\"\nmin = 0.9\nmax = "
                         "0.999\n",
                     "study.toml: search.optimizer.beta2: optimizer.beta2 does not apply to "
                     "optimizer 'momentum'",
                     &fake.rules);
  // With adam as a fixed value the same dimension is fine, and int/bool types come from the
  // schema.
  const StudySpec ok = parse(h + R"(
[fixed]
optimizer.name = "adam"
[search.optimizer.beta2]
scale = "reverse_log"
min = 0.9
max = 0.999
[search.train.batch_size]
scale = "log"
min = 16
max = 256
[search.train.deterministic]
role = "nuisance"
)",
                             &fake.rules);
  ASSERT_EQ(ok.search.size(), 3u);
  EXPECT_EQ(ok.search[1].type, ParamType::Int);
  EXPECT_EQ(ok.search[2].type, ParamType::Bool);
  EXPECT_FALSE(fake.calls.empty());
}

}  // namespace
}  // namespace pb::tuning

namespace pb::tuning {
namespace {

// Choice sections: a key's range is the one of the entry the study chooses (fixed, base or
// default), not of whichever entry declares it first.
TEST(StudySpec, RangesFollowTheChosenEntryOfAChoiceSection) {
  config::Schema schema;
  schema.add_choice(
      "opt.name", "a", "update rule",
      {config::Choice{
           "a",
           {config::make_key("m", config::Type::Float, 0.9, "a's m").at_least(0).less_than(1)}},
       config::Choice{
           "b",
           {config::make_key("m", config::Type::Float, 0.0, "b's m").at_least(0).at_most(10)}}});
  TrainRules rules;
  rules.schema = &schema;
  rules.resolve = [](const std::filesystem::path&, const std::vector<std::string>&) {};
  const std::string search = "[search.opt.m]\nmin = 0.0\nmax = 5.0\n";
  expect_study_error(train_header() + "trials = 2\n" + search,
                     "search.opt.m: max 5 is out of range: opt.m must be in [0, 1)", &rules);
  const StudySpec ok =
      parse(train_header() + "trials = 2\n[fixed]\nopt.name = \"b\"\n" + search, &rules);
  EXPECT_EQ(ok.search.size(), 1u);
  // A scientific selector checks the dimension under each of its values.
  expect_study_error(train_header() +
                         "trials = 2\n[search.opt.name]\nrole = \"scientific\"\nvalues = [\"b\", "
                         "\"a\"]\n" +
                         search,
                     "search.opt.m: max 5 is out of range: opt.m must be in [0, 1)", &rules);
}

}  // namespace
}  // namespace pb::tuning

namespace pb::tuning {
namespace {

// Without a schema (a stored study re-read by load_study), the stored parameters' types decide.
TEST(StudySpec, TypeHintsStandInForTheSchema) {
  const std::string text = std::string(kCommandHeader) +
                           "trials = 2\n[search.lr]\nmin = 1\nmax = 4\n[search.flag]\nrole = "
                           "\"nuisance\"\n";
  const std::map<std::string, ParamType> hints = {{"lr", ParamType::Float},
                                                  {"flag", ParamType::Bool}};
  const StudySpec spec =
      parse_study(text, "study.toml", fs::temp_directory_path(), nullptr, &hints);
  ASSERT_EQ(spec.search.size(), 2u);
  EXPECT_EQ(spec.search[0].type, ParamType::Float);
  EXPECT_EQ(spec.search[1].type, ParamType::Bool);
  EXPECT_EQ(spec.search[1].values.size(), 2u);
  // Without hints, integer bounds make an int dimension and a bare dimension is an error.
  expect_study_error(text, "search.flag: give min and max");
}

}  // namespace
}  // namespace pb::tuning
