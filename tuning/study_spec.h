#pragma once
// A study file: what `playbook study run STUDY.toml` reads. The playbook's "Designing the next
// round of experiments": a goal (the objective), scientific hyperparameters (what we compare),
// nuisance hyperparameters (optimised over so the comparison is fair) and fixed ones, a trial
// budget and a seed for the quasi-random search.
//
//   name = "mlp_lr_momentum"          # default: the file's stem
//   notes = "lr x momentum on the MLP"
//   base = "mlp_fashion_mnist.toml"   # training config, relative to this file (kind = "train")
//   kind = "train"                    # or "command" (then command = ["python3", "f.py"])
//   trials = 16                       # nuisance points per scientific combination
//   seed = 0                          # scrambled-Halton seed
//   retries = 2                       # a crashed trial (failed) is retried this many times
//   store = "postgresql://me@db-host/resnet"    # the study's store (default STUDY_DIR/study.db);
//                                     # or a SQLite file, relative to this file; --store wins
//   overrides = ["train.max_train_steps=300"]   # --set style fixed values, and/or:
//   [fixed]
//   train.deterministic = true
//   [objective]                       # default: best validation error of the run
//   metric = "best_val_error"         # summary.json key, or a metrics.jsonl field
//   goal = "minimize"                 # or "maximize"
//   reduce = "best"                   # metrics.jsonl fields: best (over the run) or last
//   [search.optimizer.learning_rate]  # one table per dimension, in the order of the file
//   scale = "log"                     # linear | log | reverse_log (uniform in log(1 - x))
//   min = 1e-3
//   max = 1.0
//   role = "nuisance"                 # default; or "scientific" (values = [...]) or "fixed"
//   type = "float"                    # float | int | categorical | bool; default from the key
//   [search.optimizer.name]
//   role = "scientific"
//   values = ["momentum", "nesterov"]
//   [search.schedule.warmup_steps]    # paired keys: warmup 10 runs 30 steps, 100 runs 300
//   role = "scientific"
//   values = [10, 100]
//   with = { "train.max_train_steps" = [30, 300] }
//   [search.train.batch_size]
//   role = "fixed"
//   value = 256                       # a fixed dimension is just a value
//
// Trials. Nuisance dimensions span a scrambled Halton sequence (tuning/quasi_random.h) seeded by
// `seed`, in file order. Scientific dimensions are crossed with it: with S scientific
// combinations (the product of their value counts) the study has trials x S trials, and trial t
// runs combination t mod S at nuisance point floor(t / S). So every scientific value gets the
// same nuisance budget, and the very same nuisance points, and any prefix of the trials covers
// the combinations evenly. Int dimensions are sampled over [min, max + 1) and floored.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runtime/config/config.h"
#include "runtime/core/error.h"
#include "tuning/quasi_random.h"

namespace pb::tuning {

// A bad study file: one line naming the file and the key,
//   study.toml: search.optimizer.learing_rate: unknown key (did you mean
//   'optimizer.learning_rate'?)
class StudyError : public pb::Error {
 public:
  using pb::Error::Error;
};

enum class Role { Scientific, Nuisance, Fixed };
enum class ParamType { Float, Int, Categorical, Bool };
enum class TrialKind { Train, Command };
enum class Goal { Minimize, Maximize };
enum class Reduce { Best, Last };

std::string_view to_string(Role role);
std::string_view to_string(ParamType type);
std::string_view to_string(Dimension::Scale scale);  // linear | log | reverse_log

// One searched hyperparameter (scientific or nuisance).
struct SearchParam {
  std::string key;  // config key, e.g. "optimizer.learning_rate"
  Role role = Role::Nuisance;
  ParamType type = ParamType::Float;
  Dimension::Scale scale = Dimension::Scale::Linear;
  double min = 0, max = 0;         // Float and Int
  std::vector<ParamValue> values;  // Categorical and Bool (and Float/Int given as a list)
  // Scientific lists only: other keys set together with this one, paired, not crossed: value i
  // of this dimension runs with value i of each `with` list (see the file format above).
  std::vector<std::pair<std::string, std::vector<ParamValue>>> with;

  bool is_list() const { return !values.empty(); }
};

struct Objective {
  std::string metric = "best_val_error";
  Goal goal = Goal::Minimize;
  Reduce reduce = Reduce::Best;

  // True when `a` is a better objective than `b`.
  bool better(double a, double b) const { return goal == Goal::Minimize ? a < b : a > b; }
};

struct StudySpec {
  std::filesystem::path file;        // the study file (as given)
  std::filesystem::path origin_dir;  // its directory: base and commands are relative to it
  std::string text;                  // the file's text (copied into the study directory)
  std::string name;
  std::string notes;
  TrialKind kind = TrialKind::Train;
  std::string base;                  // as written (kind = train)
  std::vector<std::string> command;  // kind = command
  std::vector<std::string> fixed;    // "key=value", in file order: overrides, [fixed], role fixed
  std::vector<SearchParam> search;   // scientific and nuisance dimensions, in file order
  int64_t trials = 0;                // nuisance points per scientific combination
  uint64_t seed = 0;
  int retries = 2;
  std::string store;         // `store`: a postgresql:// URL or an absolute SQLite path; empty: none
  double heartbeat_s = 2.0;  // a running trial's heartbeat period
  double stale_after_s = 60.0;  // a claim without a heartbeat for this long is retried
  Objective objective;

  std::filesystem::path base_path() const { return origin_dir / base; }
  // Number of scientific combinations (1 without scientific dimensions).
  int64_t scientific_combinations() const;
  int64_t total_trials() const { return trials * scientific_combinations(); }
  std::vector<const SearchParam*> nuisance() const;
  std::vector<const SearchParam*> scientific() const;
};

// What a kind = "train" study is validated against: the training config's schema and its
// resolver (base file + overrides, every cross-key rule; throws config::ConfigError). The CLI
// passes pb::train::schema() and pb::train::resolve().
struct TrainRules {
  const config::Schema* schema = nullptr;
  std::function<void(const std::filesystem::path& base, const std::vector<std::string>& overrides)>
      resolve;
};

// Reads and validates a study file. `rules` (may be null) checks the search space of a train
// study against the config schema; without it keys are not checked and types are inferred
// from the values. `origin_dir` overrides the directory relative paths start from (a copy of
// the file in a study directory). Throws StudyError.
StudySpec load_study_file(const std::filesystem::path& file, const TrainRules* rules,
                          const std::optional<std::filesystem::path>& origin_dir = std::nullopt);
// `type_hints` (key -> type, e.g. from a stored trial's parameters) decide the type of a
// min/max dimension when there is no schema: load_study passes them so that it sees the types
// the study ran with.
StudySpec parse_study(std::string_view text, const std::filesystem::path& file,
                      const std::filesystem::path& origin_dir, const TrainRules* rules,
                      const std::map<std::string, ParamType>* type_hints = nullptr);

// The one validation of a train study's search space, before any trial: every key is known
// (did-you-mean), bounds and values are inside the key's range and allowed values, list values
// have the key's type, and the base config resolves with the fixed values, with each scientific
// combination, and with each dimension at its bounds (a key the chosen optimizer does not take
// fails at every value). Throws StudyError naming the file and key. parse_study calls it.
void validate_space(const StudySpec& spec, const TrainRules& rules);

// The parameters of trial `index` (scientific first, then their paired `with` keys, then
// nuisance, each in file order).
Params trial_params(const StudySpec& spec, uint64_t index);

// The text of a value in a --set override: 0.05, 128, true, "sgd".
std::string override_text(const ParamValue& value);
// "key=value" overrides of a trial: the fixed values, then the trial's parameters.
std::vector<std::string> trial_overrides(const StudySpec& spec, const Params& params);

}  // namespace pb::tuning
