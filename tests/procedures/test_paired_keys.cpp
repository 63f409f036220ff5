// Paired keys of a study file (`with`): the sweeps generate them (a warmup of w runs 3w steps);
// they are paired with the dimension's values, never crossed, and checked like any dimension.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tuning/study_spec.h"

namespace {
using namespace pb::tuning;

// The study's base must exist; its content is not read without a schema.
StudySpec parse(const std::string& search) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  std::ofstream(dir / "pb_paired_keys_base.toml") << "";
  return parse_study("name = \"s\"\nbase = \"pb_paired_keys_base.toml\"\ntrials = 1\n" + search,
                     "s.toml", dir, nullptr);
}

TEST(PairedKeys, TakeTheValueAtTheSamePositionAndAreNotCrossed) {
  const StudySpec spec = parse(
      "[search.schedule.warmup_steps]\nrole = \"scientific\"\nvalues = [10, 100]\n"
      "with = { \"train.max_train_steps\" = [30, 300], \"schedule.name\" = [\"a\", \"b\"] }\n"
      "[search.train.batch_size]\nrole = \"scientific\"\nvalues = [16, 32]\n");
  ASSERT_EQ(spec.total_trials(), 4);  // 2 warmups x 2 batch sizes: the paired keys add none
  for (uint64_t t = 0; t < 4; ++t) {
    const Params p = trial_params(spec, t);
    ASSERT_EQ(p.size(), 4u);
    EXPECT_EQ(p[0].name, "schedule.warmup_steps");
    EXPECT_EQ(p[1].name, "train.batch_size");
    EXPECT_EQ(p[2].name, "train.max_train_steps");
    EXPECT_EQ(p[3].name, "schedule.name");
    const auto w = std::get<std::int64_t>(p[0].value);
    EXPECT_EQ(std::get<std::int64_t>(p[2].value), 3 * w);
    EXPECT_EQ(std::get<std::string>(p[3].value), w == 10 ? "a" : "b");
  }
}

TEST(PairedKeys, OneValuePerValueOnScientificListsOnly) {
  EXPECT_THROW(parse("[search.x]\nrole = \"scientific\"\nvalues = [1, 2]\nwith = { y = [1] }\n"),
               StudyError);
  EXPECT_THROW(parse("[search.x]\nmin = 1.0\nmax = 2.0\nwith = { y = [1] }\n"), StudyError);
  try {
    parse("[search.x]\nrole = \"scientific\"\nvalues = [1, 2]\nwith = { y = [1, 2, 3] }\n");
    FAIL() << "no error";
  } catch (const StudyError& e) {
    EXPECT_NE(std::string(e.what()).find("search.x.with.y"), std::string::npos) << e.what();
  }
}

}  // namespace
