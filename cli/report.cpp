// `playbook report` (report.h).
#include "cli/report.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "tuning/analysis.h"
#include "tuning/report.h"
#include "tuning/report_input.h"

namespace pb::cli {

namespace fs = std::filesystem;
namespace insight = pb::tuning::insight;

ReportCommands::ReportCommands(CLI::App& app) {
  report_ =
      app.add_subcommand("report",
                         "Write a study's HTML report: axis and isolation plots, boundary check, "
                         "training-curve diagnostics, sampling bootstrap, trial variance");
  report_->add_option("study_dir", study_dir_, "The study directory (holds study.db)")->required();
  report_->add_option("-o,--out", out_, "The HTML file (default: STUDY_DIR/report.html)");
  report_->add_option("--json", json_out_, "Also write the analysis and verdicts as JSON here");
  report_->add_flag("--text", text_, "Also print the verdicts as plain text");
}

namespace {

void write_file(const fs::path& file, const std::string& text) {
  if (file.has_parent_path()) fs::create_directories(file.parent_path());
  const fs::path tmp = file.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    if (!out) throw insight::ReportError(fmt::format("cannot write {}", tmp.string()));
  }
  fs::rename(tmp, file);
}

}  // namespace

std::optional<int> ReportCommands::run() {
  if (!report_->parsed()) return std::nullopt;
  try {
    // Assets first: a missing install is reported before any work.
    const insight::ReportAssets assets = insight::load_report_assets(insight::default_assets_dir());
    const insight::StudyData study = insight::load_study_data(study_dir_);
    const insight::StudyAnalysis analysis = insight::analyze_study(study);
    const fs::path out = out_.empty() ? fs::path(study_dir_) / "report.html" : fs::path(out_);
    write_file(out, insight::render_report(study, analysis, assets));
    if (!json_out_.empty())
      write_file(json_out_, insight::analysis_json(study, analysis).dump(2) + "\n");
    if (text_) std::cout << insight::analysis_text(study, analysis);
    fmt::print(stderr, "report: wrote {} ({} trials, {} completed)\n", out.string(),
               analysis.counts.total, analysis.counts.completed);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "playbook report: {}\n", e.what());
    return 1;
  }
}

}  // namespace pb::cli
