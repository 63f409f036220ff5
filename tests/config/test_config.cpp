// pb::config: schema declaration, loading, every validation error with its exact message,
// --set overrides, sources, typed access, to_toml round trip and did_you_mean.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/config/config.h"

namespace pb::config {
namespace {

namespace fs = std::filesystem;

// A schema like the trainer's, with one key of every type and every kind of constraint.
Schema test_schema() {
  Schema s;
  s.add_string("model.name", "resnet20", "Model architecture")
      .one_of({"mlp", "resnet20", "resnet56"});
  s.add_int("model.width", 16, "Channels of the first stage").at_least(1);
  s.add_float("optimizer.learning_rate", 0.1, "Peak learning rate").greater_than(0);
  s.add_float("optimizer.momentum", 0.9, "Heavy-ball momentum").at_least(0).less_than(1);
  s.add_string("optimizer.name", "sgd", "Optimizer").one_of({"sgd", "adam", "adamw"});
  s.add_bool("train.amp", false, "Mixed precision");
  s.add_int("train.steps", std::nullopt, "Number of training steps").at_least(1);
  s.add_float_list("train.milestones", std::vector<double>{0.5, 0.75}, "Decay points")
      .greater_than(0)
      .at_most(1);
  s.add_int_list("data.crop", std::vector<int64_t>{32, 32}, "Crop (height, width)").at_least(1);
  s.add_string_list("data.augment", std::vector<std::string>{"flip"}, "Augmentations")
      .one_of({"flip", "crop", "cutout"});
  s.add_string("data.path", "", "Dataset directory");
  return s;
}

constexpr const char* kSource = "configs/x.toml";

// The message of the ConfigError that f throws, or "<no error>".
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}

std::string parse_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return error_of([&] { parse(text, kSource, test_schema(), overrides); });
}

std::string override_error(const std::vector<std::string>& overrides) {
  return parse_error("[train]\nsteps = 10\n", overrides);
}

// ---- loading and defaults -----------------------------------------------------------------------

TEST(Config, LoadsValuesAndFillsDefaults) {
  const Config c = parse(R"(
[model]
name = "resnet56"
[optimizer]
learning_rate = 0.05
[train]
steps = 1000
amp = true
[data]
crop = [24, 28]
augment = ["flip", "crop"]
)",
                         kSource, test_schema());
  EXPECT_EQ(c.get<std::string>("model.name"), "resnet56");
  EXPECT_EQ(c.get<int64_t>("model.width"), 16);
  EXPECT_EQ(c.get<double>("optimizer.learning_rate"), 0.05);
  EXPECT_EQ(c.get<double>("optimizer.momentum"), 0.9);
  EXPECT_EQ(c.get<std::string>("optimizer.name"), "sgd");
  EXPECT_TRUE(c.get<bool>("train.amp"));
  EXPECT_EQ(c.get<int64_t>("train.steps"), 1000);
  EXPECT_EQ(c.get<std::vector<double>>("train.milestones"), (std::vector<double>{0.5, 0.75}));
  EXPECT_EQ(c.get<std::vector<int64_t>>("data.crop"), (std::vector<int64_t>{24, 28}));
  EXPECT_EQ(c.get<std::vector<std::string>>("data.augment"),
            (std::vector<std::string>{"flip", "crop"}));
  EXPECT_EQ(c.source("model.name"), Source::File);
  EXPECT_EQ(c.source("model.width"), Source::Default);
  EXPECT_EQ(c.source("train.steps"), Source::File);
}

TEST(Config, IntsAreAcceptedAsFloats) {
  const Config c =
      parse("[optimizer]\nlearning_rate = 1\n[train]\nsteps = 1\n", kSource, test_schema());
  EXPECT_EQ(c.get<double>("optimizer.learning_rate"), 1.0);
  const Config l = parse("[train]\nsteps = 1\nmilestones = [1, 0.5]\n", kSource, test_schema());
  EXPECT_EQ(l.get<std::vector<double>>("train.milestones"), (std::vector<double>{1.0, 0.5}));
}

TEST(Config, DottedKeysAndEmptyListsWork) {
  const Config c =
      parse("train.steps = 5\ndata.augment = []\ndata.crop = []\n", kSource, test_schema());
  EXPECT_EQ(c.get<int64_t>("train.steps"), 5);
  EXPECT_TRUE(c.get<std::vector<std::string>>("data.augment").empty());
  EXPECT_TRUE(c.get<std::vector<int64_t>>("data.crop").empty());
}

TEST(Config, LoadReadsAFile) {
  const fs::path dir = fs::temp_directory_path() / ("pb_config_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path file = dir / "run.toml";
  std::ofstream(file) << "[train]\nsteps = 7\n[optimizer]\nlearing_rate = 0.1\n";
  EXPECT_EQ(error_of([&] { load(file, test_schema()); }),
            file.string() +
                ": unknown key 'optimizer.learing_rate' (did you mean "
                "'optimizer.learning_rate'?)");
  std::ofstream(file) << "[train]\nsteps = 7\n";
  EXPECT_EQ(load(file, test_schema()).get<int64_t>("train.steps"), 7);
  EXPECT_EQ(error_of([&] { load(dir / "nope.toml", test_schema()); }),
            (dir / "nope.toml").string() + ": no such file");
  EXPECT_EQ(error_of([&] { load(dir, test_schema()); }),
            dir.string() + ": is a directory, not a TOML file");
  fs::remove_all(dir);
}

// ---- every error, exactly -----------------------------------------------------------------------

TEST(ConfigErrors, ParseErrorNamesFileLineAndColumn) {
  // toml++'s own description after file:line:column.
  EXPECT_EQ(parse_error("[train]\nsteps = 10\n[model\nname = \"mlp\"\n"),
            "configs/x.toml:3:7: Error while parsing table header: expected ']', saw '\\n'");
  EXPECT_EQ(parse_error("[train]\nsteps = 10\nsteps = 11\n"),
            "configs/x.toml:3:9: Error while parsing key-value pair: cannot redefine existing "
            "integer 'steps'");
}

TEST(ConfigErrors, UnknownKeySuggestsTheClosest) {
  EXPECT_EQ(parse_error("[optimizer]\nlearing_rate = 0.1\n"),
            "configs/x.toml: unknown key 'optimizer.learing_rate' (did you mean "
            "'optimizer.learning_rate'?)");
  EXPECT_EQ(parse_error("[model]\ncolour = 1\n"), "configs/x.toml: unknown key 'model.colour'");
  // The right name in the wrong section, and a key outside any section.
  EXPECT_EQ(parse_error("[model]\nmomentum = 0.5\n"),
            "configs/x.toml: unknown key 'model.momentum' (did you mean 'optimizer.momentum'?)");
  EXPECT_EQ(parse_error("steps = 3\n"),
            "configs/x.toml: unknown key 'steps' (did you mean 'train.steps'?)");
  EXPECT_EQ(parse_error("[model.name]\nx = 1\n"),
            "configs/x.toml: model.name must be a string, got table { x = 1 }");
}

TEST(ConfigErrors, UnknownSection) {
  EXPECT_EQ(parse_error("[optimiser]\nmomentum = 0.5\n"),
            "configs/x.toml: unknown section 'optimiser' (did you mean 'optimizer'?)");
  EXPECT_EQ(parse_error("[logging]\nevery = 5\n"), "configs/x.toml: unknown section 'logging'");
  EXPECT_EQ(parse_error("model = 3\n"),
            "configs/x.toml: 'model' must be a section ([model]), got int 3");
}

TEST(ConfigErrors, ReportedInFileOrder) {
  // toml++ keeps keys sorted; the error must still be the first one in the file.
  EXPECT_EQ(parse_error("[train]\nzzz = 1\n[model]\naaa = 1\n"),
            "configs/x.toml: unknown key 'train.zzz'");
  EXPECT_EQ(parse_error("[model]\nwidth = \"x\"\nname = 3\n"),
            "configs/x.toml: model.width must be an int, got string \"x\"");
}

TEST(ConfigErrors, WrongType) {
  EXPECT_EQ(parse_error("[optimizer]\nlearning_rate = \"abc\"\n"),
            "configs/x.toml: optimizer.learning_rate must be a float, got string \"abc\"");
  EXPECT_EQ(parse_error("[model]\nwidth = 2.5\n"),
            "configs/x.toml: model.width must be an int, got float 2.5");
  EXPECT_EQ(parse_error("[train]\namp = \"yes\"\n"),
            "configs/x.toml: train.amp must be a bool, got string \"yes\"");
  EXPECT_EQ(parse_error("[model]\nname = 3\n"),
            "configs/x.toml: model.name must be a string, got int 3");
  EXPECT_EQ(parse_error("[data]\ncrop = [1, 2.5]\n"),
            "configs/x.toml: data.crop must be a list of ints, got list [1, 2.5]");
  EXPECT_EQ(parse_error("[data]\ncrop = 32\n"),
            "configs/x.toml: data.crop must be a list of ints, got int 32");
  EXPECT_EQ(parse_error("[train]\nmilestones = [0.5, \"a\"]\n"),
            "configs/x.toml: train.milestones must be a list of floats, got list [0.5, \"a\"]");
  EXPECT_EQ(parse_error("[data]\naugment = \"flip\"\n"),
            "configs/x.toml: data.augment must be a list of strings, got string \"flip\"");
  EXPECT_EQ(parse_error("[data]\npath = 1979-05-27\n"),
            "configs/x.toml: data.path must be a string, got date 1979-05-27");
  EXPECT_EQ(parse_error("[data]\npath = \"a\\\"b\\n\"\n[optimizer]\nlearning_rate = \"a\\\"b\"\n"),
            "configs/x.toml: optimizer.learning_rate must be a float, got string \"a\\\"b\"");
}

TEST(ConfigErrors, OutOfRange) {
  EXPECT_EQ(parse_error("[optimizer]\nmomentum = 1.5\n"),
            "configs/x.toml: optimizer.momentum must be in [0, 1), got 1.5");
  EXPECT_EQ(parse_error("[optimizer]\nmomentum = 1\n"),
            "configs/x.toml: optimizer.momentum must be in [0, 1), got 1.0");
  EXPECT_EQ(parse_error("[optimizer]\nlearning_rate = -0.1\n"),
            "configs/x.toml: optimizer.learning_rate must be > 0, got -0.1");
  EXPECT_EQ(parse_error("[optimizer]\nlearning_rate = 0.0\n"),
            "configs/x.toml: optimizer.learning_rate must be > 0, got 0.0");
  EXPECT_EQ(parse_error("[optimizer]\nlearning_rate = nan\n"),
            "configs/x.toml: optimizer.learning_rate must be > 0, got nan");
  EXPECT_EQ(parse_error("[model]\nwidth = 0\n"), "configs/x.toml: model.width must be >= 1, got 0");
  EXPECT_EQ(parse_error("[data]\ncrop = [32, 0]\n"),
            "configs/x.toml: data.crop[1] must be >= 1, got 0");
  EXPECT_EQ(parse_error("[train]\nmilestones = [0.5, 1.5]\n"),
            "configs/x.toml: train.milestones[1] must be in (0, 1], got 1.5");
  // The bounds themselves, where inclusive.
  EXPECT_EQ(parse("[optimizer]\nmomentum = 0\n[train]\nsteps = 1\nmilestones = [1]\n", kSource,
                  test_schema())
                .get<double>("optimizer.momentum"),
            0.0);
}

TEST(ConfigErrors, NotAnAllowedValue) {
  EXPECT_EQ(parse_error("[model]\nname = \"resnet2\"\n"),
            "configs/x.toml: model.name must be one of 'mlp', 'resnet20', 'resnet56', got "
            "'resnet2' (did you mean 'resnet20'?)");
  EXPECT_EQ(parse_error("[model]\nname = \"vgg\"\n"),
            "configs/x.toml: model.name must be one of 'mlp', 'resnet20', 'resnet56', got 'vgg'");
  EXPECT_EQ(parse_error("[data]\naugment = [\"flip\", \"cutot\"]\n"),
            "configs/x.toml: data.augment[1] must be one of 'flip', 'crop', 'cutout', got "
            "'cutot' (did you mean 'cutout'?)");
}

TEST(ConfigErrors, MissingRequiredKey) {
  EXPECT_EQ(parse_error(""),
            "configs/x.toml: missing required key 'train.steps' (Number of training steps)");
  EXPECT_EQ(parse_error("[train]\namp = true\n"),
            "configs/x.toml: missing required key 'train.steps' (Number of training steps)");
}

TEST(ConfigErrors, AreConfigErrorsAndPbErrorsOnOneLine) {
  EXPECT_THROW(parse("[x]\n", kSource, test_schema()), pb::Error);
  for (const std::string& text :
       {std::string("[x]\n"), std::string("[model]\nname = 1\n"), std::string("= 3\n"),
        std::string(""), std::string("[model]\nname = \"a\nb\"\n")}) {
    const std::string e = parse_error(text);
    EXPECT_NE(e, "<no error>") << text;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

// ---- overrides ----------------------------------------------------------------------------------

TEST(ConfigOverrides, ParseTomlValuesAndBareStrings) {
  const Config c = parse(
      "[optimizer]\nlearning_rate = 0.2\n", kSource, test_schema(),
      {"optimizer.learning_rate=0.5", "train.steps=3", "optimizer.name=adam", "model.name=\"mlp\"",
       "data.crop=[24,24]", "train.amp=true", "train.milestones=[0.25, 1]",
       "data.augment=[flip, cutout]", "data.path=/data/cifar 10"});
  EXPECT_EQ(c.get<double>("optimizer.learning_rate"), 0.5);
  EXPECT_EQ(c.source("optimizer.learning_rate"), Source::Override);
  EXPECT_EQ(c.get<int64_t>("train.steps"), 3);
  EXPECT_EQ(c.get<std::string>("optimizer.name"), "adam");
  EXPECT_EQ(c.get<std::string>("model.name"), "mlp");
  EXPECT_EQ(c.get<std::vector<int64_t>>("data.crop"), (std::vector<int64_t>{24, 24}));
  EXPECT_TRUE(c.get<bool>("train.amp"));
  EXPECT_EQ(c.get<std::vector<double>>("train.milestones"), (std::vector<double>{0.25, 1.0}));
  EXPECT_EQ(c.get<std::vector<std::string>>("data.augment"),
            (std::vector<std::string>{"flip", "cutout"}));
  EXPECT_EQ(c.get<std::string>("data.path"), "/data/cifar 10");
  EXPECT_EQ(c.source("model.width"), Source::Default);
}

TEST(ConfigOverrides, StringKeysTakeTheTextAsWritten) {
  // "1e3" and "true" are TOML values, but a string key takes the text itself.
  const Config c =
      parse("", kSource, test_schema(), {"train.steps=1", "data.path=1e3", "data.path = true "});
  EXPECT_EQ(c.get<std::string>("data.path"), "true");
  const Config l = parse("", kSource, test_schema(),
                         {"train.steps=1", "data.augment=crop,'flip'", "data.augment=[]"});
  EXPECT_TRUE(l.get<std::vector<std::string>>("data.augment").empty());
  const Config w =
      parse("", kSource, test_schema(), {"train.steps=1", "data.augment= crop , \"flip\""});
  EXPECT_EQ(w.get<std::vector<std::string>>("data.augment"),
            (std::vector<std::string>{"crop", "flip"}));
}

TEST(ConfigOverrides, LaterOverridesWin) {
  const Config c =
      parse("[train]\nsteps = 10\n", kSource, test_schema(), {"train.steps=20", "train.steps=30"});
  EXPECT_EQ(c.get<int64_t>("train.steps"), 30);
}

TEST(ConfigOverrides, ErrorsNameTheOverride) {
  EXPECT_EQ(override_error({"optimizer.learning_rate=abc"}),
            "--set optimizer.learning_rate=abc: optimizer.learning_rate must be a float, got "
            "string \"abc\"");
  EXPECT_EQ(override_error({"optimizer.learing_rate=0.1"}),
            "--set optimizer.learing_rate=0.1: unknown key 'optimizer.learing_rate' (did you mean "
            "'optimizer.learning_rate'?)");
  EXPECT_EQ(override_error({"optimiser.momentum=0.5"}),
            "--set optimiser.momentum=0.5: unknown section 'optimiser' (did you mean "
            "'optimizer'?)");
  EXPECT_EQ(override_error({"lr=0.5"}), "--set lr=0.5: unknown key 'lr'");
  EXPECT_EQ(override_error({"optimizer.momentum=1.5"}),
            "--set optimizer.momentum=1.5: optimizer.momentum must be in [0, 1), got 1.5");
  EXPECT_EQ(override_error({"model.name=resnet2"}),
            "--set model.name=resnet2: model.name must be one of 'mlp', 'resnet20', 'resnet56', "
            "got 'resnet2' (did you mean 'resnet20'?)");
  EXPECT_EQ(override_error({"model.width=2.5"}),
            "--set model.width=2.5: model.width must be an int, got float 2.5");
  EXPECT_EQ(override_error({"data.crop=[1,"}),
            "--set data.crop=[1,: data.crop must be a list of ints, got string \"[1,\"");
  EXPECT_EQ(override_error({"data.augment=[flip, cutot]"}),
            "--set data.augment=[flip, cutot]: data.augment[1] must be one of 'flip', 'crop', "
            "'cutout', got 'cutot' (did you mean 'cutout'?)");
  EXPECT_EQ(override_error({"train.steps"}), "--set train.steps: expected section.key=value");
}

TEST(ConfigOverrides, SupplyARequiredKey) {
  const Config c = parse("", kSource, test_schema(), {"train.steps=4"});
  EXPECT_EQ(c.get<int64_t>("train.steps"), 4);
  EXPECT_EQ(c.source("train.steps"), Source::Override);
}

// ---- typed access -------------------------------------------------------------------------------

TEST(ConfigAccess, WrongTypeOrUndeclaredKeyThrowsNamingIt) {
  const Config c = parse("", kSource, test_schema(), {"train.steps=4"});
  EXPECT_EQ(error_of([&] { c.get<int64_t>("optimizer.learning_rate"); }),
            "config: key 'optimizer.learning_rate' is a float, read as an int");
  EXPECT_EQ(error_of([&] { c.get<double>("optimizer.learnig_rate"); }),
            "config: key 'optimizer.learnig_rate' is not declared in the schema (did you mean "
            "'optimizer.learning_rate'?)");
  EXPECT_EQ(error_of([&] { c.source("nope.nope"); }),
            "config: key 'nope.nope' is not declared in the schema");
  EXPECT_TRUE(c.has("optimizer.momentum"));
  EXPECT_FALSE(c.has("optimizer.nesterov"));
}

TEST(ConfigAccess, ListsKeysAndSections) {
  const Config c = parse("", kSource, test_schema(), {"train.steps=4"});
  EXPECT_EQ(c.section_keys("optimizer"),
            (std::vector<std::string>{"optimizer.learning_rate", "optimizer.momentum",
                                      "optimizer.name"}));
  EXPECT_TRUE(c.section_keys("nope").empty());
  EXPECT_EQ(c.keys().size(), 11u);
  EXPECT_EQ(c.schema().sections(),
            (std::vector<std::string>{"model", "optimizer", "train", "data"}));
  EXPECT_EQ(format_value(c.value("data.crop")), "[32, 32]");
  EXPECT_EQ(format_value(c.value("optimizer.learning_rate")), "0.1");
}

// ---- to_toml ------------------------------------------------------------------------------------

TEST(ConfigToToml, WritesEveryKeyWithItsDoc) {
  Schema s;
  s.add_float("optimizer.learning_rate", 0.1, "Peak learning rate").greater_than(0);
  s.add_int("train.steps", std::nullopt, "Number of training steps");
  s.add_string("optimizer.name", "sgd", "Optimizer\nby name");
  s.add_int_list("data.crop", std::vector<int64_t>{32, 32}, "Crop");
  s.add_bool("train.amp", false, "");
  const Config c = parse("[train]\nsteps = 3\n", kSource, s, {"optimizer.learning_rate=1"});
  EXPECT_EQ(c.to_toml(),
            "# playbook configuration, fully resolved: every key with its value, defaults "
            "included.\n"
            "\n"
            "[optimizer]\n"
            "# Peak learning rate\n"
            "learning_rate = 1.0\n"
            "# Optimizer\n"
            "# by name\n"
            "name = \"sgd\"\n"
            "\n"
            "[train]\n"
            "# Number of training steps\n"
            "steps = 3\n"
            "amp = false\n"
            "\n"
            "[data]\n"
            "# Crop\n"
            "crop = [32, 32]\n");
}

TEST(ConfigToToml, LoadingItAgainReproducesTheConfig) {
  Schema s = test_schema();
  s.add_float("extra.tiny", 1e-8, "A tiny float");
  s.add_float("extra.huge", -1.5e300, "A huge float");
  s.add_float("extra.third", 1.0 / 3.0, "Needs all 17 digits");
  s.add_float("extra.inf", INFINITY, "Infinity");
  s.add_string("extra.text", "quote \" backslash \\ tab \t newline \n bell \a unicode é", "Text");
  s.add_float_list("extra.empty", std::vector<double>{}, "Empty list");
  s.add_int("extra.big", -9223372036854775807LL - 1, "Most negative int");
  const Config original = parse("[model]\nname = \"mlp\"\n", kSource, s,
                                {"train.steps=12", "data.augment=[crop, cutout]",
                                 "train.milestones=[0.1, 0.30000000000000004]"});

  const fs::path dir = fs::temp_directory_path() / ("pb_config_rt_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path file = dir / "config.toml";
  std::ofstream(file) << original.to_toml();
  const Config again = load(file, s);
  fs::remove_all(dir);

  for (const std::string& key : original.keys()) {
    EXPECT_EQ(again.value(key), original.value(key))
        << key << ": " << format_value(original.value(key)) << " vs "
        << format_value(again.value(key));
    EXPECT_EQ(again.source(key), Source::File) << key;
  }
  EXPECT_EQ(again.to_toml(), original.to_toml());
  EXPECT_EQ(again.get<double>("extra.third"), 1.0 / 3.0);
}

// ---- schema -------------------------------------------------------------------------------------

TEST(ConfigSchema, RejectsBadDeclarations) {
  Schema s;
  EXPECT_EQ(error_of([&] { s.add_int("steps", 1, ""); }),
            "schema: key 'steps' must be 'section.key' (letters, digits, '_' and '-' on each "
            "side)");
  EXPECT_EQ(error_of([&] { s.add_int("a.b.c", 1, ""); }),
            "schema: key 'a.b.c' must be 'section.key' (letters, digits, '_' and '-' on each "
            "side)");
  s.add_int("train.steps", 1, "");
  EXPECT_EQ(error_of([&] { s.add_int("train.steps", 2, ""); }),
            "schema: key 'train.steps' is declared twice");
  EXPECT_EQ(error_of([&] { s.add_string("model.name", "x", "").at_least(1); }),
            "schema: at_least on model.name, which is a string: only numbers have a range");
  EXPECT_EQ(error_of([&] { s.add_int("model.depth", 1, "").one_of({"a"}); }),
            "schema: one_of on model.depth, which is an int: only strings have allowed values");
  s.add_float("optimizer.momentum", 1.5, "").at_least(0).less_than(1);
  EXPECT_EQ(error_of([&] { parse("", kSource, s); }),
            "schema: default of optimizer.momentum: optimizer.momentum must be in [0, 1), got 1.5");
}

TEST(ConfigSchema, KeySpecParts) {
  const Schema s = test_schema();
  const KeySpec* spec = s.find("optimizer.learning_rate");
  ASSERT_NE(spec, nullptr);
  EXPECT_EQ(spec->section(), "optimizer");
  EXPECT_EQ(spec->name(), "learning_rate");
  EXPECT_EQ(spec->range_str(), "> 0");
  EXPECT_FALSE(spec->required());
  EXPECT_TRUE(s.find("train.steps")->required());
  EXPECT_EQ(s.find("optimizer.momentum")->range_str(), "in [0, 1)");
  EXPECT_EQ(s.find("model.name")->range_str(), "");
  EXPECT_EQ(s.find("nope.nope"), nullptr);
  EXPECT_EQ(type_name(Type::StringList), "a list of strings");
}

// ---- did_you_mean -------------------------------------------------------------------------------

TEST(DidYouMean, EditDistance) {
  EXPECT_EQ(edit_distance("", ""), 0u);
  EXPECT_EQ(edit_distance("abc", ""), 3u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("sgd", "sdg"), 1u);  // one transposition
  EXPECT_EQ(edit_distance("ca", "abc"), 3u);   // optimal string alignment, not full Damerau
  EXPECT_EQ(edit_distance("learing_rate", "learning_rate"), 1u);
}

TEST(DidYouMean, SuggestsOnlyCloseCandidates) {
  const std::vector<std::string> optimizers = {"sgd", "momentum", "nesterov", "adam", "adamw"};
  EXPECT_EQ(did_you_mean("sdg", optimizers), "sgd");
  EXPECT_EQ(did_you_mean("SGD", optimizers), "sgd");  // case is ignored
  EXPECT_EQ(did_you_mean("moment", optimizers), "momentum");
  EXPECT_EQ(did_you_mean("nestrov", optimizers), "nesterov");
  EXPECT_EQ(did_you_mean("adamw", optimizers), "adamw");
  EXPECT_EQ(did_you_mean("adan", optimizers), "adam");  // tie with nothing closer: first best
  EXPECT_EQ(did_you_mean("lion", optimizers), "");
  EXPECT_EQ(did_you_mean("lr", {"wd"}), "");
  EXPECT_EQ(did_you_mean("x", {}), "");
  EXPECT_EQ(did_you_mean("ab", {"abc", "abd"}), "abc");  // ties go to the earlier candidate
  EXPECT_EQ(did_you_mean_hint("resnet2", {"resnet20", "resnet56"}), " (did you mean 'resnet20'?)");
  EXPECT_EQ(did_you_mean_hint("vgg", {"resnet20"}), "");
}

}  // namespace
}  // namespace pb::config
