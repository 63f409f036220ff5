// The run-directory layer (train/run_dir.h): state.json parsing on bad input (the fuzz target's
// regression inputs live here), checkpoint directories written whole and checked on reading,
// metrics cut on resume, config differences named.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "runtime/core/error.h"
#include "train/config.h"
#include "train/run_dir.h"

namespace pb::train {
namespace {

namespace fs = std::filesystem;

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(fs::temp_directory_path() / (name + "-" + std::to_string(::getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string error_of(std::string_view text) {
  try {
    parse_checkpoint_state(text, "state.json");
  } catch (const pb::Error& e) {
    return e.what();
  }
  return "";
}

TEST(CheckpointState, RoundTripsThroughItsText) {
  CheckpointState s;
  s.step = 1200;
  s.loader_epoch = 3;
  s.loader_next_batch = 17;
  s.has_initial_loss = true;
  s.initial_loss = 2.302585;
  s.last_val_error = 0.125;
  s.best = {{1200, 0.125}, {800, 0.25}};
  s.dropout_rngs = {{"features.1", 18446744073709551615ull, 42}};
  s.files["model.safetensors"] = {4096, 0xdeadbeef};
  const CheckpointState t = parse_checkpoint_state(checkpoint_state_text(s), "x");
  EXPECT_EQ(t.step, 1200);
  EXPECT_EQ(t.loader_epoch, 3);
  EXPECT_EQ(t.loader_next_batch, 17);
  EXPECT_TRUE(t.has_initial_loss);
  EXPECT_EQ(t.initial_loss, 2.302585);
  ASSERT_EQ(t.best.size(), 2u);
  EXPECT_EQ(t.best[1].step, 800);
  ASSERT_EQ(t.dropout_rngs.size(), 1u);
  EXPECT_EQ(t.dropout_rngs[0].seed, 18446744073709551615ull);
  EXPECT_EQ(t.files.at("model.safetensors").crc32, 0xdeadbeefu);
}

TEST(CheckpointState, BadInputIsAOneLineErrorNamingTheField) {
  const std::string loader = R"("loader": {"epoch": 0, "next_batch": 0})";
  const std::string rest = R"("initial_loss": null, "best": [], "dropout_rngs": [])";
  EXPECT_NE(error_of("").find("state.json: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("[1]").find("not a JSON object"), std::string::npos);
  EXPECT_NE(error_of("{}").find("\"step\" is missing"), std::string::npos);
  EXPECT_NE(error_of(R"({"step": -1, )" + loader + ", " + rest + "}").find("non-negative"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"step": 1.5, )" + loader + ", " + rest + "}").find("\"step\""),
            std::string::npos);
  EXPECT_NE(error_of(R"({"step": 18446744073709551615, )" + loader + ", " + rest + "}")
                .find("non-negative integer"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"step": 1, "loader": 3, )" + rest + "}").find("loader"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"step": 1, )" + loader +
                     R"(, "initial_loss": "x", "best": [], "dropout_rngs": []})")
                .find("initial_loss"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"step": 1, )" + loader +
                     R"(, "initial_loss": null, "best": [{"step": 1}], "dropout_rngs": []})")
                .find("best[].val_error"),
            std::string::npos);
  // RNG states are decimal strings of uint64 (a JSON number would lose bits past 2^53).
  for (const char* seed : {R"(12)", R"("")", R"("-1")", R"("12x")", R"("18446744073709551616")"}) {
    EXPECT_NE(
        error_of(
            R"({"step": 1, )" + loader +
            R"(, "initial_loss": null, "best": [], "dropout_rngs": [{"module": "d", "seed": )" +
            seed + R"(, "offset": "0"}]})")
            .find("dropout_rngs[].seed"),
        std::string::npos)
        << seed;
  }
  EXPECT_NE(error_of(R"({"step": 1, )" + loader + ", " + rest +
                     R"(, "files": {"m": {"bytes": 1, "crc32": 4294967296}}})")
                .find("32-bit"),
            std::string::npos);
}

TEST(MetricsUpTo, KeepsStepsUpToTheCheckpointAndDropsALineAKillCutShort) {
  const std::string text =
      "{\"step\": 10, \"lr\": 0.1}\n{\"step\": 20}\n\n{\"step\": 30}\n{\"step\": 4";
  EXPECT_EQ(metrics_up_to(text, 20, "m"), "{\"step\": 10, \"lr\": 0.1}\n{\"step\": 20}\n");
  EXPECT_EQ(metrics_up_to(text, 100, "m"),
            "{\"step\": 10, \"lr\": 0.1}\n{\"step\": 20}\n{\"step\": 30}\n");
  EXPECT_EQ(metrics_up_to("{\"step\": 10}", 10, "m"), "{\"step\": 10}\n");  // complete, no newline
  EXPECT_EQ(metrics_up_to("", 10, "m"), "");
  EXPECT_THROW(metrics_up_to("{\"step\": 1\n{\"step\": 2}\n", 10, "m"), pb::Error);
  EXPECT_THROW(metrics_up_to("[1]\n", 10, "m"), pb::Error);
  EXPECT_THROW(metrics_up_to("{\"step\": \"1\"}\n", 10, "m"), pb::Error);
}

std::vector<checkpoint::NamedTensor> tensors(float v) {
  Tensor w = zeros(Shape{3, 2});
  for (int i = 0; i < 6; ++i) w.data<float>()[i] = v + static_cast<float>(i);
  return {{"fc.weight", w}, {"fc.bias", zeros(Shape{3})}};
}

TEST(CheckpointDirectory, WritesWholeAndReadsBackChecked) {
  ScratchDir dir("pb-run-dir-ckpt");
  const fs::path ckpts = dir.path() / "checkpoints";
  fs::create_directories(ckpts);
  CheckpointState s;
  s.step = 100;
  write_checkpoint(ckpts, 100, tensors(1), {{"format", "pt"}}, tensors(2), s);
  write_checkpoint(ckpts, 200, tensors(3), {}, tensors(4), s);
  fs::create_directories(ckpts / "step_00000300.tmp");      // a kill's leftover
  fs::create_directories(ckpts / "step_00000250.corrupt");  // moved aside by a resume
  const std::vector<fs::path> all = checkpoints_newest_first(ckpts);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].filename(), "step_00000200");
  const CheckpointFiles c = read_checkpoint(all[1]);
  EXPECT_EQ(c.model.find("fc.weight")->data<float>()[5], 6.0f);
  EXPECT_EQ(c.state.files.size(), 2u);
  EXPECT_FALSE(fs::exists(ckpts / "step_00000100.tmp"));

  // Damage is found: size first, then the CRC, then a missing file.
  const fs::path model = all[0] / "model.safetensors";
  const std::string bytes = read(model);
  write(model, bytes.substr(0, bytes.size() - 1));
  EXPECT_THROW(
      {
        try {
          read_checkpoint(all[0]);
        } catch (const pb::Error& e) {
          EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
          throw;
        }
      },
      pb::Error);
  std::string flipped = bytes;
  flipped[flipped.size() - 1] ^= 1;
  write(model, flipped);
  EXPECT_THROW(
      {
        try {
          read_checkpoint(all[0]);
        } catch (const pb::Error& e) {
          EXPECT_NE(std::string(e.what()).find("CRC-32"), std::string::npos) << e.what();
          throw;
        }
      },
      pb::Error);
  fs::remove(model);
  EXPECT_THROW(read_checkpoint(all[0]), pb::Error);
}

TEST(CheckpointDirectory, AMissingCheckpointsFolderIsAClearError) {
  ScratchDir dir("pb-run-dir-gone");
  CheckpointState s;
  try {
    write_checkpoint(dir.path() / "checkpoints", 1, tensors(1), {}, tensors(2), s);
    FAIL() << "no error";
  } catch (const pb::Error& e) {
    EXPECT_NE(std::string(e.what()).find("is gone"), std::string::npos) << e.what();
  }
}

TEST(ConfigDifferences, NamesEveryDifferingKeyWithBothValues) {
  const std::string base =
      "[model]\nname = \"mlp\"\n[data]\ndataset = \"synthetic\"\n[optimizer]\nname = "
      "\"momentum\"\nlearning_rate = 0.05\n[schedule]\nname = \"cosine\"\n[train]\nbatch_size = "
      "16\n";
  const config::Config a = resolve_text(base, "a.toml");
  EXPECT_EQ(config_differences(a, resolve_text(base, "b.toml")), "");
  const std::string d = config_differences(
      a, resolve_text(base, "b.toml", {"optimizer.learning_rate=0.1", "train.batch_size=32"}));
  EXPECT_NE(d.find("optimizer.learning_rate (0.05 in the run, 0.1 now)"), std::string::npos) << d;
  EXPECT_NE(d.find("train.batch_size (16 in the run, 32 now)"), std::string::npos) << d;
  const std::string adam =
      config_differences(a, resolve_text(base, "b.toml", {"optimizer.name=adam"}));
  EXPECT_NE(adam.find("optimizer.name"), std::string::npos) << adam;
}

}  // namespace
}  // namespace pb::train
