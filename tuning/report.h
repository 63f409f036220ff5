#pragma once
// The study report: one self-contained HTML file (`playbook report STUDY_DIR`) that shows a
// study the way the playbook asks us to look at it: the tracking-table row, the study file and
// its search space, every verdict of tuning/analysis.h in words, and charts (Vega-Lite) for
// each question: axis plots with the boundary zones shaded and infeasible trials marked,
// isolation plots, the training curves of the best trials, the sampling bootstrap.
//
// Offline. The charts are drawn by vega, vega-lite and vega-embed, pinned by
// tuning/report/package-lock.json and installed by scripts/setup (`npm ci`). Their minified
// browser builds are read from node_modules when the report is written and inlined into the
// file, so it opens with no network. Missing assets are a ReportError that says how to install
// them; a report is never written with charts that cannot render.
//
// Self-check. The page records what it rendered on <body>: data-pb-state = "done" once every
// chart settled, data-pb-charts (charts embedded), data-pb-errors (console errors, uncaught
// exceptions and rejected promises since the page started; their text is in #pb-errors), and
// each chart's <div class="pb-chart"> carries data-expected-marks (written here: one per trial,
// bucket or curve drawn) and data-rendered-marks (counted in the SVG after vega-embed resolves:
// the children of every mark group whose name starts with pb_). tests/report/ reads these from
// headless Chromium.
//
// Sections. A report is a list of ReportSection; standard_sections() gives the ones every study
// has. A sweep procedure (batch size, learning rate, warmup, clipping) adds its own section by
// writing a builder (StudyData, StudyAnalysis) -> ReportSection and passing its result in
// `extra` to render_report (they are placed after the verdicts, before the generic sections).
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/error.h"
#include "tuning/analysis.h"

namespace pb::tuning::insight {

class ReportError : public pb::Error {
 public:
  using pb::Error::Error;
};

// The minified browser builds, as read from node_modules.
struct ReportAssets {
  std::string vega, vega_lite, vega_embed;
  std::string versions;  // "vega 6.4.0, vega-lite 6.5.0, vega-embed 7.3.0"
};

// $PLAYBOOK_REPORT_ASSETS when set, else tuning/report/node_modules of the source tree this was
// built from.
std::filesystem::path default_assets_dir();
// Throws ReportError naming the missing file and the command that installs it.
ReportAssets load_report_assets(const std::filesystem::path& node_modules);

struct Chart {
  std::string id;       // DOM id, unique in the report
  std::string caption;  // one line under the chart
  nlohmann::json spec;  // a Vega-Lite spec; layers to count are named pb_*
  int expected_marks = 0;
};

struct ReportSection {
  std::string id, title;
  std::string html;  // trusted HTML (escape data with html_escape)
  std::vector<Chart> charts;
};

std::string html_escape(std::string_view text);

// Axis plots, isolation plots, boundary check, training curves, sampling, trial variance (when
// the study carries reruns), the search space and the study file.
std::vector<ReportSection> standard_sections(const StudyData& study, const StudyAnalysis& analysis);

// The whole HTML document.
std::string render_report(const StudyData& study, const StudyAnalysis& analysis,
                          const ReportAssets& assets, const std::vector<ReportSection>& extra = {});

}  // namespace pb::tuning::insight
