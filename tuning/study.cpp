// Study directories: creation, the read API, CSV export and the tracking table.
#include "tuning/study.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tuning/sqlite_store.h"

namespace pb::tuning {
namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text_atomic(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    if (!out) throw StoreError(fmt::format("{}: cannot write", tmp.string()));
  }
  fs::rename(tmp, p);
}

ojson param_json(const ParamValue& v) {
  struct Visitor {
    ojson operator()(bool b) const { return b; }
    ojson operator()(std::int64_t x) const { return x; }
    ojson operator()(double x) const { return x; }
    ojson operator()(const std::string& s) const { return s; }
  };
  return std::visit(Visitor{}, v);
}

std::string json_value_text(const ojson& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number_float()) return to_string(ParamValue(v.get<double>()));
  return v.dump();
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-./=:,+@%") == std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string objective_text(std::optional<double> v) {
  return v ? fmt::format("{:.6g}", *v) : std::string();
}

}  // namespace

std::string trial_dir_name(int64_t index, int64_t total_trials) {
  int digits = 4;
  for (int64_t n = 10000; n < total_trials; n *= 10) ++digits;
  return fmt::format("trials/{:0{}}", index, digits);
}

void init_study(const fs::path& study_dir, const StudySpec& spec) {
  fs::create_directories(study_dir / "trials");
  const fs::path copy = study_dir / "study.toml";
  std::error_code ec;
  if (!fs::exists(copy, ec) || read_text(copy) != spec.text) {
    // A different copy is refused by the store below; only write when the store is new.
    auto store = open_study_store(study_dir);
    if (!store->study()) write_text_atomic(copy, spec.text);
  }
  StudyRecord rec;
  rec.name = spec.name;
  rec.spec_text = spec.text;
  rec.spec_file = spec.file.string();
  rec.origin_dir = fs::absolute(spec.origin_dir).lexically_normal().string();
  rec.notes = spec.notes;
  rec.created = now_seconds();
  rec.total_trials = spec.total_trials();
  std::vector<NewTrial> trials;
  trials.reserve(static_cast<std::size_t>(rec.total_trials));
  for (int64_t i = 0; i < rec.total_trials; ++i) {
    ojson params = ojson::object();
    for (const Assignment& a : trial_params(spec, static_cast<uint64_t>(i))) {
      params[a.name] = param_json(a.value);
    }
    trials.push_back({i, params.dump(), trial_dir_name(i, rec.total_trials)});
  }
  auto store = open_study_store(study_dir);
  try {
    store->create(rec, trials);
  } catch (const StoreError&) {
    throw StoreError(fmt::format(
        "{}: holds a study made from a different study file than {} (compare with {}); run the "
        "changed study with another --dir",
        study_dir.string(), spec.file.string(), copy.string()));
  }
}

Study load_study(const fs::path& study_dir, const TrainRules* rules) {
  std::error_code ec;
  if (!has_study_store(study_dir)) {
    throw StudyError(fmt::format("{}: not a study directory (no study.db)", study_dir.string()));
  }
  Study s;
  s.dir = study_dir;
  auto store = open_study_store(study_dir);
  auto rec = store->study();
  if (!rec) {
    throw StudyError(fmt::format("{}: {} holds no study", study_dir.string(),
                                 redact_location(study_store_location(study_dir))));
  }
  s.record = *rec;
  s.trials = store->trials();
  // The types the study ran with, from the stored parameters of its first trial (an int key's
  // range written min = 1, max = 4 and a float key's look alike without the config schema).
  std::map<std::string, ParamType> hints;
  if (!s.trials.empty()) {
    const ojson j = ojson::parse(s.trials.front().params_json, nullptr, false);
    if (j.is_object()) {
      for (const auto& [k, v] : j.items()) {
        hints[k] = v.is_boolean()          ? ParamType::Bool
                   : v.is_number_integer() ? ParamType::Int
                   : v.is_number()         ? ParamType::Float
                                           : ParamType::Categorical;
      }
    }
  }
  s.spec = parse_study(rec->spec_text, fs::path(rec->spec_file), fs::path(rec->origin_dir), rules,
                       &hints);
  s.spec.notes = rec->notes;
  return s;
}

std::string run_dir_of(const Study& study, const TrialRecord& trial) {
  if (study.spec.kind == TrialKind::Train) return (fs::path(trial.run_dir) / "run").string();
  return trial.run_dir;
}

std::vector<std::pair<std::string, std::string>> params_of(const TrialRecord& trial) {
  std::vector<std::pair<std::string, std::string>> out;
  const ojson j = ojson::parse(trial.params_json, nullptr, false);
  if (!j.is_object()) return out;
  for (const auto& [k, v] : j.items()) out.emplace_back(k, json_value_text(v));
  return out;
}

StudyCounts count_trials(const std::vector<TrialRecord>& trials) {
  StudyCounts c;
  c.total = static_cast<int64_t>(trials.size());
  for (const TrialRecord& t : trials) {
    switch (t.status) {
      case TrialStatus::Pending:
        ++c.pending;
        break;
      case TrialStatus::Running:
        ++c.running;
        break;
      case TrialStatus::Completed:
        ++c.completed;
        break;
      case TrialStatus::Infeasible:
        ++c.infeasible;
        break;
      case TrialStatus::Failed:
        ++c.failed;
        break;
    }
  }
  return c;
}

const TrialRecord* best_trial(const Study& study) {
  const TrialRecord* best = nullptr;
  for (const TrialRecord& t : study.trials) {
    if (t.status != TrialStatus::Completed || !t.objective || !std::isfinite(*t.objective)) {
      continue;
    }
    if (!best || study.spec.objective.better(*t.objective, *best->objective)) best = &t;
  }
  return best;
}

namespace {
// The base config as a user in the current directory would name it: relative when below it.
std::string display_base(const Study& study) {
  fs::path base = (fs::path(study.record.origin_dir) / study.spec.base).lexically_normal();
  std::error_code ec;
  const fs::path rel = fs::relative(base, fs::current_path(), ec);
  if (!ec && !rel.empty() && rel.native().rfind("..", 0) != 0) base = rel;
  return base.string();
}
}  // namespace

std::string reproduce_command(const Study& study, const TrialRecord& trial) {
  const ojson j = ojson::parse(trial.params_json, nullptr, false);
  if (study.spec.kind == TrialKind::Train) {
    std::string cmd = "playbook train " + shell_quote(display_base(study));
    Params params;
    if (j.is_object()) {
      for (const auto& [k, v] : j.items()) {
        ParamValue pv;
        if (v.is_boolean()) {
          pv = v.get<bool>();
        } else if (v.is_number_integer()) {
          pv = static_cast<std::int64_t>(v.get<int64_t>());
        } else if (v.is_number()) {
          pv = v.get<double>();
        } else {
          pv = v.get<std::string>();
        }
        params.push_back({k, pv});
      }
    }
    for (const std::string& o : trial_overrides(study.spec, params)) {
      cmd += " --set ";
      cmd += shell_quote(o);
    }
    return cmd;
  }
  std::string cmd = fmt::format(
      "(cd {} && PLAYBOOK_TRIAL_PARAMS={}", shell_quote(study.record.origin_dir),
      shell_quote(
          fs::absolute(study.dir / trial.run_dir / "params.json").lexically_normal().string()));
  for (const std::string& a : study.spec.command) {
    cmd += ' ';
    cmd += shell_quote(a);
  }
  cmd += ')';
  return cmd;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string export_csv(const Study& study) {
  std::vector<std::string> keys;
  for (const SearchParam& p : study.spec.search) keys.push_back(p.key);
  std::string out = "index";
  for (const std::string& k : keys) {
    out += ',';
    out += csv_field(k);
  }
  out += ",status,reason,objective,best_step,run_dir\n";
  for (const TrialRecord& t : study.trials) {
    out += std::to_string(t.index);
    const auto params = params_of(t);
    for (const std::string& k : keys) {
      auto it =
          std::find_if(params.begin(), params.end(), [&](const auto& kv) { return kv.first == k; });
      out += ',';
      out += csv_field(it == params.end() ? std::string() : it->second);
    }
    out += ',';
    out += to_string(t.status);
    out += ',';
    out += csv_field(t.reason);
    out += ',';
    if (t.objective) out += to_string(ParamValue(*t.objective));
    out += ",";
    if (t.best_step) out += std::to_string(*t.best_step);
    out += ',';
    out += csv_field(run_dir_of(study, t));
    out += '\n';
  }
  return out;
}

TrackingRow tracking_row(const Study& study) {
  TrackingRow r;
  r.name = study.record.name;
  r.dir = study.dir.string();
  r.base = study.spec.kind == TrialKind::Train
               ? display_base(study)
               : fmt::format("{}", fmt::join(study.spec.command, " "));
  r.notes = study.record.notes;
  r.counts = count_trials(study.trials);
  r.objective = fmt::format("{} ({})", study.spec.objective.metric,
                            study.spec.objective.goal == Goal::Minimize ? "min" : "max");
  if (const TrialRecord* best = best_trial(study)) {
    r.best_objective = best->objective;
    r.best_index = best->index;
    std::vector<std::string> parts;
    for (const auto& [k, v] : params_of(*best)) parts.push_back(k + "=" + v);
    r.best_params = fmt::format("{}", fmt::join(parts, " "));
    r.reproduce = reproduce_command(study, *best);
  }
  return r;
}

std::vector<TrackingRow> tracking_table(const fs::path& root, std::vector<std::string>* errors) {
  std::vector<fs::path> dirs;
  std::error_code ec;
  if (has_study_store(root)) dirs.push_back(root);
  if (fs::is_directory(root, ec)) {
    for (auto it = fs::recursive_directory_iterator(
             root, fs::directory_options::skip_permission_denied, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      if (it->is_directory(ec) && it->path().filename() == "trials") {
        it.disable_recursion_pending();  // run directories hold no studies
        continue;
      }
      // study.db, or the store file of a directory bound to a remote store (--store).
      const fs::path name = it->path().filename();
      if ((name == "study.db" || (name == "store" && it->is_regular_file(ec) &&
                                  !fs::exists(it->path().parent_path() / "study.db", ec))) &&
          it->path().parent_path() != root) {
        dirs.push_back(it->path().parent_path());
      }
    }
  }
  std::sort(dirs.begin(), dirs.end());
  std::vector<TrackingRow> rows;
  for (const fs::path& d : dirs) {
    try {
      rows.push_back(tracking_row(load_study(d)));
    } catch (const std::exception& e) {
      if (errors) errors->push_back(e.what());
    }
  }
  return rows;
}

std::string format_tracking_table(const std::vector<TrackingRow>& rows, TableFormat format) {
  const std::vector<std::string> header = {"study",     "base",       "notes",       "trials",
                                           "completed", "infeasible", "failed",      "objective",
                                           "best",      "best trial", "best params", "reproduce"};
  std::vector<std::vector<std::string>> cells;
  for (const TrackingRow& r : rows) {
    cells.push_back({r.name, r.base, r.notes, std::to_string(r.counts.total),
                     std::to_string(r.counts.completed), std::to_string(r.counts.infeasible),
                     std::to_string(r.counts.failed), r.objective, objective_text(r.best_objective),
                     r.best_index >= 0 ? std::to_string(r.best_index) : std::string(),
                     r.best_params, r.reproduce});
  }
  std::string out;
  if (format == TableFormat::Csv) {
    auto line = [&](const std::vector<std::string>& row) {
      std::vector<std::string> q;
      for (const auto& c : row) q.push_back(csv_field(c));
      out += fmt::format("{}\n", fmt::join(q, ","));
    };
    line(header);
    for (const auto& row : cells) line(row);
    return out;
  }
  if (format == TableFormat::Markdown) {
    auto line = [&](const std::vector<std::string>& row) {
      std::vector<std::string> q;
      for (std::string c : row) {
        std::string e;
        for (char ch : c) e += ch == '|' ? std::string("\\|") : std::string(1, ch);
        q.push_back(e);
      }
      out += fmt::format("| {} |\n", fmt::join(q, " | "));
    };
    line(header);
    out += "|" + std::string();
    for (std::size_t i = 0; i < header.size(); ++i) out += " --- |";
    out += "\n";
    for (const auto& row : cells) line(row);
    return out;
  }
  // Plain text: one block per study (the reproduce command is too long for a column).
  for (const TrackingRow& r : rows) {
    out += fmt::format("{}  ({})\n", r.name, r.dir);
    out += fmt::format("  base:       {}\n", r.base);
    if (!r.notes.empty()) out += fmt::format("  notes:      {}\n", r.notes);
    out += fmt::format(
        "  trials:     {} ({} completed, {} infeasible, {} failed, {} pending, {} running)\n",
        r.counts.total, r.counts.completed, r.counts.infeasible, r.counts.failed, r.counts.pending,
        r.counts.running);
    if (r.best_index >= 0) {
      out += fmt::format("  best:       {} = {} (trial {}): {}\n", r.objective,
                         objective_text(r.best_objective), r.best_index, r.best_params);
      out += fmt::format("  reproduce:  {}\n", r.reproduce);
    } else {
      out += fmt::format("  best:       none yet ({})\n", r.objective);
    }
  }
  if (rows.empty()) out += "no studies\n";
  return out;
}

}  // namespace pb::tuning
