#pragma once
// The adapter from a study directory (tuning/study.h: study.db, the study file's copy,
// trials/NNNN/run/metrics.jsonl) to the analysis's plain StudyData (tuning/analysis.h).
//
// Bad input is a clear ReportError or a warning, never a crash: a missing directory or study.db,
// or a store that cannot be read (corrupt, not a database) throws ReportError naming the
// directory and the cause; a completed trial without metrics.jsonl, or with unreadable lines in
// it, is kept (its objective still counts) with a warning in StudyData::warnings, and simply has
// no curve. Reruns of the best trials (STUDY_DIR/reruns/*/, `playbook study rerun`) become
// StudyData::reruns, one group per rerun trial.
#include <filesystem>
#include <string>

#include "tuning/analysis.h"
#include "tuning/report.h"

namespace pb::tuning::insight {

// Reads a study directory into StudyData. Throws ReportError.
StudyData load_study_data(const std::filesystem::path& study_dir);

// The verdicts of a study directory as plain text (analysis_text of analyze_study with the
// default options): the one call `playbook study status` needs. Throws ReportError.
std::string study_insight_text(const std::filesystem::path& study_dir);

// A run directory's metrics.jsonl as a curve (train_loss, val_error, val_loss). Lines that are
// not JSON objects are skipped and counted in *bad_lines. Missing file: an empty curve.
TrainingCurve read_metrics(const std::filesystem::path& metrics_jsonl, int* bad_lines = nullptr);

}  // namespace pb::tuning::insight
