// The study report's input and output: study directories with bad or partial content give a
// clear message or a report that says so (tuning/report_input.h), and the HTML holds every
// section, a mark count per chart, and data that cannot end a <script> early (tuning/report.h).
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>

#include "tuning/report.h"
#include "tuning/report_input.h"
#include "tuning/sqlite_store.h"
#include "tuning/study.h"
#include "tuning/study_spec.h"

namespace pb::tuning::insight {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("pb_report_" +
            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string message_of(const fs::path& dir) {
  try {
    load_study_data(dir);
  } catch (const ReportError& e) {
    return e.what();
  }
  return "(no error)";
}

// A 4-trial command study (no training config needed) in `dir`.
void make_study(const fs::path& dir) {
  const std::string text =
      "name = \"bad_input\"\nkind = \"command\"\ncommand = [\"true\"]\ntrials = 4\nseed = 1\n"
      "[search.optimizer.learning_rate]\nscale = \"log\"\nmin = 1e-3\nmax = 1.0\n";
  init_study(dir, parse_study(text, dir / "study.toml", dir, nullptr));
}

TEST(ReportInput, MissingDirectoryOrStoreIsAClearError) {
  TempDir tmp;
  EXPECT_NE(message_of(tmp.path / "nope").find("no such study directory"), std::string::npos);
  EXPECT_NE(message_of(tmp.path).find("no study.db"), std::string::npos) << message_of(tmp.path);
}

TEST(ReportInput, CorruptStoreIsAClearError) {
  TempDir tmp;
  std::ofstream(tmp.path / "study.db") << "this is not an SQLite database, just some text\n";
  const std::string m = message_of(tmp.path);
  EXPECT_NE(m.find("cannot read the study"), std::string::npos) << m;
  EXPECT_NE(m.find(tmp.path.string()), std::string::npos) << m;
}

TEST(ReportInput, NoCompletedTrialGivesAReportThatSaysSo) {
  TempDir tmp;
  make_study(tmp.path);
  const StudyData d = load_study_data(tmp.path);
  EXPECT_EQ(d.name, "bad_input");
  ASSERT_EQ(d.trials.size(), 4u);
  ASSERT_EQ(d.axes.size(), 1u);
  EXPECT_EQ(d.axes[0].scale, AxisScale::Log);
  for (const auto& t : d.trials) EXPECT_EQ(t.status, TrialStatus::Pending);
  const auto a = analyze_study(d);
  const std::string html = render_report(d, a, ReportAssets{"", "", "", "test"});
  EXPECT_NE(html.find("No completed trial yet"), std::string::npos);
}

TEST(ReportInput, CompletedTrialWithoutMetricsIsAWarningNotAnError) {
  TempDir tmp;
  make_study(tmp.path);
  {
    auto store = open_study_store(tmp.path);
    for (int i = 0; i < 2; ++i) {
      auto t = store->claim("w", 1.0);
      ASSERT_TRUE(t);
      TrialOutcome o;
      o.status = pb::tuning::TrialStatus::Completed;
      o.objective = 0.5 - 0.1 * i;
      ASSERT_TRUE(store->finish(t->index, "w", o, 0, 2.0));
    }
  }
  // Trial 1 has a metrics.jsonl with one broken line among good ones.
  const fs::path run = tmp.path / trial_dir_name(1, 4) / "run";
  fs::create_directories(run);
  std::ofstream(run / "metrics.jsonl")
      << "{\"step\": 10, \"train_loss\": 2.0}\n{not json\n"
      << "{\"step\": 20, \"train_loss\": 1.5, \"val_error\": 0.4, \"val_loss\": 1.2}\n";

  const StudyData d = load_study_data(tmp.path);
  ASSERT_EQ(d.trials.size(), 4u);
  EXPECT_TRUE(d.trials[0].curve.empty());
  EXPECT_EQ(d.trials[1].curve.train_loss.size(), 2u);
  EXPECT_EQ(d.trials[1].curve.val_error.size(), 1u);
  ASSERT_EQ(d.warnings.size(), 2u);
  EXPECT_NE(d.warnings[0].find("1 unreadable line"), std::string::npos) << d.warnings[0];
  EXPECT_NE(d.warnings[1].find("1 completed trial(s) have no metrics.jsonl"), std::string::npos)
      << d.warnings[1];
  const auto a = analyze_study(d);
  ASSERT_TRUE(a.best_trial);
  EXPECT_EQ(*a.best_trial, 1);
  EXPECT_NE(analysis_text(d, a).find("warning: "), std::string::npos);
  EXPECT_EQ(study_insight_text(tmp.path), analysis_text(d, a));
  // The tracking-table row comes from the engine's tracking_row.
  ASSERT_FALSE(d.tracking.empty());
  EXPECT_EQ(d.tracking[0].second, "bad_input");
}

TEST(ReportAssetsTest, MissingAssetsSayHowToInstallThem) {
  TempDir tmp;
  try {
    load_report_assets(tmp.path);
    FAIL() << "no error";
  } catch (const ReportError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("vega/build/vega.min.js"), std::string::npos) << m;
    EXPECT_NE(m.find("scripts/setup"), std::string::npos) << m;
  }
}

TEST(ReportHtml, EverySectionAndAMarkCountPerChart) {
  StudyData s;
  s.name = "html";
  s.study_file = "notes = \"</script><script>alert(1)</script>\"\n";
  s.axes = {{"optimizer.learning_rate", AxisScale::Log, 1e-3, 1.0, {}, ParamRole::Nuisance},
            {"model.width",
             AxisScale::Categorical,
             0,
             0,
             {int64_t{64}, int64_t{128}},
             ParamRole::Scientific}};
  for (int i = 0; i < 6; ++i) {
    TrialResult t;
    t.index = i;
    t.status = i == 5 ? TrialStatus::Infeasible : TrialStatus::Completed;
    t.params = {{"optimizer.learning_rate", 0.01 * (i + 1)},
                {"model.width", int64_t{i % 2 ? 128 : 64}}};
    if (i != 5) t.objective = 0.1 * (i + 1);
    for (int step = 10; step <= 100; step += 10) {
      t.curve.train_loss.push_back({step, 1.0 / step});
      t.curve.val_error.push_back({step, 0.5 / step});
    }
    s.trials.push_back(t);
  }
  const auto a = analyze_study(s);
  const std::string html =
      render_report(s, a, ReportAssets{"/*vega*/", "/*vl*/", "/*embed*/", "t"});
  for (const char* id : {"id=\"summary\"", "id=\"axes\"", "id=\"isolation\"", "id=\"curves\"",
                         "id=\"sampling\"", "id=\"variance\"", "id=\"space\""})
    EXPECT_NE(html.find(id), std::string::npos) << id;
  // Both axis plots expect one mark per finished trial (5 completed + 1 infeasible).
  EXPECT_NE(html.find("id=\"chart-axis-0\" data-expected-marks=\"6\""), std::string::npos);
  EXPECT_NE(html.find("id=\"chart-axis-1\" data-expected-marks=\"6\""), std::string::npos);
  EXPECT_NE(html.find("id=\"chart-isolation-0\" data-expected-marks=\"2\""), std::string::npos);
  // The study file is escaped in the page; nothing from the data closes a script element.
  EXPECT_NE(html.find("&lt;/script&gt;&lt;script&gt;alert(1)"), std::string::npos);
  EXPECT_EQ(html.find("alert(1)</script>"), std::string::npos);
  // Extra sections (a sweep's procedure) come first after the summary.
  ReportSection sweep{"lr-sweep", "Learning-rate sweep", "<p>sweep</p>", {}};
  const std::string with = render_report(s, a, ReportAssets{}, {sweep});
  EXPECT_LT(with.find("id=\"lr-sweep\""), with.find("id=\"axes\""));
}

}  // namespace
}  // namespace pb::tuning::insight
