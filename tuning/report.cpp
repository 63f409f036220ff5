// The HTML study report (report.h): sections of text and Vega-Lite charts in one offline file.
#include "tuning/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace pb::tuning::insight {

using nlohmann::json;
namespace fs = std::filesystem;

// ---- assets ------------------------------------------------------------------------------------

fs::path default_assets_dir() {
  if (const char* env = std::getenv("PLAYBOOK_REPORT_ASSETS"); env && *env) return env;
  return PLAYBOOK_REPORT_ASSETS_DIR;
}

namespace {

std::string read_asset(const fs::path& dir, const std::string& rel) {
  const fs::path file = dir / rel;
  std::ifstream in(file, std::ios::binary);
  if (!in)
    throw ReportError(fmt::format(
        "report assets missing: cannot read {}. The charts need vega, vega-lite and vega-embed "
        "from npm: run scripts/setup (or `npm ci` in tuning/report), or point "
        "PLAYBOOK_REPORT_ASSETS at a node_modules folder that has them",
        file.string()));
  std::ostringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  if (text.size() < 1000)
    throw ReportError(fmt::format("report assets: {} is truncated ({} bytes); rerun scripts/setup",
                                  file.string(), text.size()));
  // Inline-safe: no source-map fetches, no early end of the <script> element.
  for (size_t p; (p = text.find("//# sourceMappingURL=")) != std::string::npos;) {
    const size_t e = text.find('\n', p);
    text.erase(p, e == std::string::npos ? std::string::npos : e - p);
  }
  for (size_t p = 0; (p = text.find("</", p)) != std::string::npos; p += 3) {
    std::string tag = text.substr(p + 2, 6);
    std::transform(tag.begin(), tag.end(), tag.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (tag == "script") text.replace(p, 2, "<\\/");
  }
  return text;
}

std::string asset_version(const fs::path& dir, const std::string& package) {
  std::ifstream in(dir / package / "package.json");
  if (!in) return "?";
  try {
    return json::parse(in).value("version", "?");
  } catch (const json::exception&) {
    return "?";
  }
}

}  // namespace

ReportAssets load_report_assets(const fs::path& node_modules) {
  ReportAssets a;
  a.vega = read_asset(node_modules, "vega/build/vega.min.js");
  a.vega_lite = read_asset(node_modules, "vega-lite/build/vega-lite.min.js");
  a.vega_embed = read_asset(node_modules, "vega-embed/build/vega-embed.min.js");
  a.versions = fmt::format(
      "vega {}, vega-lite {}, vega-embed {}", asset_version(node_modules, "vega"),
      asset_version(node_modules, "vega-lite"), asset_version(node_modules, "vega-embed"));
  return a;
}

// ---- helpers -----------------------------------------------------------------------------------

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

std::string g4(double v) {
  return fmt::format("{:.4g}", v);
}

const char* kStatusColors[] = {"#4c78a8", "#e45756", "#9d9d9d"};

// x encoding (and the edge-zone x/x2 fields) of an axis on its scale.
json x_encoding(const AxisSpec& a, const std::string& field) {
  json x{{"field", field}, {"title", a.name}};
  switch (a.scale) {
    case AxisScale::Categorical: {
      x["type"] = "nominal";
      json order = json::array();
      for (const auto& v : a.values) order.push_back(to_string(v));
      x["sort"] = order;
      break;
    }
    case AxisScale::Linear:
      x["type"] = "quantitative";
      x["scale"] = {{"domain", {a.min, a.max}}, {"nice", false}, {"zero", false}};
      break;
    case AxisScale::Log:
      x["type"] = "quantitative";
      x["scale"] = {{"type", "log"}, {"domain", {a.min, a.max}}, {"nice", false}};
      x["axis"] = {{"grid", false}, {"tickCount", 4}};
      break;
    case AxisScale::ReverseLog:
      // Plotted as 1 - x on a reversed log axis, labelled with x itself.
      x["type"] = "quantitative";
      x["scale"] = {
          {"type", "log"}, {"domain", {1 - a.max, 1 - a.min}}, {"nice", false}, {"reverse", true}};
      x["axis"] = {
          {"labelExpr", "format(1 - datum.value, '.4~g')"}, {"grid", false}, {"tickCount", 4}};
      x["title"] = a.name + " (reverse-log)";
      break;
  }
  return x;
}

// The position of an axis value on the chart's x field.
json x_value(const AxisSpec& a, const AxisValue& v) {
  if (a.scale == AxisScale::Categorical || !v.numeric) return v.label;
  if (a.scale == AxisScale::ReverseLog) return 1 - v.x;
  return v.x;
}

// Unit position u -> the chart's x field value.
double x_at_unit(const AxisSpec& a, double u) {
  switch (a.scale) {
    case AxisScale::Linear:
      return a.min + u * (a.max - a.min);
    case AxisScale::Log:
      return a.min * std::pow(a.max / a.min, u);
    case AxisScale::ReverseLog:
      return (1 - a.min) * std::pow((1 - a.max) / (1 - a.min), u);
    case AxisScale::Categorical:
      break;
  }
  return 0;
}

json base_spec(const std::string& title) {
  return {{"width", 380},
          {"height", 230},
          {"title", title},
          {"config", {{"font", "system-ui, sans-serif"}, {"view", {{"stroke", "#ddd"}}}}}};
}

std::string objective_title(const StudyData& s) {
  return s.objective + (s.minimize ? " (lower is better)" : " (higher is better)");
}

Chart axis_chart(const StudyData& study, const StudyAnalysis& an, const AxisPlot& plot,
                 const BoundaryCheck* boundary, int n) {
  const AxisSpec& a = plot.axis;
  double worst = 0;
  bool any = false;
  for (const auto& p : plot.points)
    if (p.objective) {
      worst =
          !any ? *p.objective
               : (study.minimize ? std::max(worst, *p.objective) : std::min(worst, *p.objective));
      any = true;
    }
  json rows = json::array();
  for (const auto& p : plot.points) {
    const bool done = p.objective.has_value();
    rows.push_back({{"trial", p.trial},
                    {"x", x_value(a, p.value)},
                    {"value", p.value.label},
                    {"y", done ? *p.objective : worst},
                    {"status", done ? "completed" : std::string(to_string(p.status))},
                    {"best", an.best_trial && *an.best_trial == p.trial}});
  }
  json spec = base_spec(a.name);
  json x = x_encoding(a, "x");
  json y{{"field", "y"},
         {"type", "quantitative"},
         {"title", objective_title(study)},
         {"scale", {{"zero", false}}}};
  json layers = json::array();
  if (a.scale != AxisScale::Categorical) {
    // The boundary check's outer zones, shaded; amber where the check flagged the edge.
    const double e = 0.1;
    json zones = json::array();
    zones.push_back({{"x0", x_at_unit(a, 0)},
                     {"x1", x_at_unit(a, e)},
                     {"flagged", boundary && boundary->low.flagged}});
    zones.push_back({{"x0", x_at_unit(a, 1 - e)},
                     {"x1", x_at_unit(a, 1)},
                     {"flagged", boundary && boundary->high.flagged}});
    json zx = x_encoding(a, "x0");
    zx["title"] = x["title"];
    layers.push_back({{"data", {{"values", zones}}},
                      {"mark", {{"type", "rect"}, {"opacity", 0.35}}},
                      {"encoding",
                       {{"x", zx},
                        {"x2", {{"field", "x1"}}},
                        {"color",
                         {{"condition", {{"test", "datum.flagged"}, {"value", "#f2b447"}}},
                          {"value", "#e8e8e8"}}}}}});
  }
  json tooltip = json::array({{{"field", "trial"}, {"type", "quantitative"}},
                              {{"field", "value"}, {"title", a.name}},
                              {{"field", "status"}},
                              {{"field", "y"}, {"title", study.objective}}});
  layers.push_back({{"name", "pb_trials"},
                    {"data", {{"values", rows}}},
                    {"mark", {{"type", "point"}, {"filled", true}, {"size", 55}, {"clip", true}}},
                    {"encoding",
                     {{"x", x},
                      {"y", y},
                      {"shape",
                       {{"field", "status"},
                        {"type", "nominal"},
                        {"title", "trial"},
                        {"scale",
                         {{"domain", {"completed", "infeasible", "failed"}},
                          {"range", {"circle", "cross", "triangle-up"}}}}}},
                      {"color",
                       {{"field", "status"},
                        {"type", "nominal"},
                        {"title", "trial"},
                        {"scale",
                         {{"domain", {"completed", "infeasible", "failed"}},
                          {"range", {kStatusColors[0], kStatusColors[1], kStatusColors[2]}}}}}},
                      {"tooltip", tooltip}}}});
  // The best trial, ringed.
  layers.push_back(
      {{"data", {{"values", rows}}},
       {"transform", json::array({{{"filter", "datum.best"}}})},
       {"mark", {{"type", "point"}, {"size", 260}, {"color", "#000"}, {"strokeWidth", 1.5}}},
       {"encoding", {{"x", x}, {"y", y}}}});
  spec["layer"] = layers;
  Chart c;
  c.id = fmt::format("chart-axis-{}", n);
  c.spec = spec;
  c.expected_marks = static_cast<int>(plot.points.size());
  c.caption = fmt::format(
      "{} trials on the {} scale ({} completed); infeasible trials are red crosses drawn at the "
      "worst objective, failed ones grey triangles; the best trial is ringed; shaded: the outer "
      "10% checked for boundary problems (amber when flagged).",
      plot.points.size(), to_string(a.scale),
      std::count_if(plot.points.begin(), plot.points.end(),
                    [](const AxisPoint& p) { return p.objective.has_value(); }));
  return c;
}

Chart isolation_chart(const StudyData& study, const IsolationPlot& p, int n) {
  json rows = json::array(), order = json::array();
  int marks = 0;
  for (const auto& b : p.buckets) {
    order.push_back(b.label);
    if (!b.best_objective) continue;
    ++marks;
    rows.push_back({{"bucket", b.label},
                    {"y", *b.best_objective},
                    {"trial", *b.best_trial},
                    {"completed", b.completed}});
  }
  json spec = base_spec("isolation: " + p.axis.name);
  json x{{"field", "bucket"},
         {"type", "ordinal"},
         {"sort", order},
         {"title", p.axis.name},
         {"scale", {{"domain", order}}}};
  json y{{"field", "y"},
         {"type", "quantitative"},
         {"scale", {{"zero", false}}},
         {"title", "best " + study.objective}};
  spec["data"] = {{"values", rows}};
  spec["encoding"] = {{"x", x}, {"y", y}};
  spec["layer"] =
      json::array({{{"mark", {{"type", "line"}, {"color", "#bbb"}}}},
                   {{"name", "pb_buckets"},
                    {"mark", {{"type", "point"}, {"filled", true}, {"size", 80}}},
                    {"encoding",
                     {{"tooltip", json::array({{{"field", "bucket"}},
                                               {{"field", "trial"}},
                                               {{"field", "y"}, {"title", study.objective}},
                                               {{"field", "completed"}}})}}}}});
  Chart c;
  c.id = fmt::format("chart-isolation-{}", n);
  c.spec = spec;
  c.expected_marks = marks;
  c.caption =
      "Each point is the best trial over the nuisance hyperparameters for that value "
      "(bucket) of " +
      p.axis.name + ".";
  return c;
}

Chart curve_chart(const StudyData& study, const std::vector<const TrialResult*>& trials,
                  const std::string& metric, int n) {
  json rows = json::array();
  int lines = 0;
  for (const auto* t : trials) {
    const auto& pts = metric == "train_loss"  ? t->curve.train_loss
                      : metric == "val_error" ? t->curve.val_error
                                              : t->curve.val_loss;
    bool any = false;
    for (const auto& p : pts)
      if (std::isfinite(p.value)) {
        rows.push_back(
            {{"trial", fmt::format("trial {}", t->index)}, {"step", p.step}, {"value", p.value}});
        any = true;
      }
    lines += any;
  }
  (void)study;
  json spec = base_spec(metric);
  spec["data"] = {{"values", rows}};
  spec["layer"] = json::array(
      {{{"name", "pb_curves"},
        {"mark", {{"type", "line"}, {"strokeWidth", 1.5}, {"point", false}}},
        {"encoding",
         {{"x", {{"field", "step"}, {"type", "quantitative"}}},
          {"y",
           {{"field", "value"},
            {"type", "quantitative"},
            {"title", metric},
            {"scale", {{"zero", false}}}}},
          {"color", {{"field", "trial"}, {"type", "nominal"}, {"title", "best trials"}}},
          {"tooltip", json::array({{{"field", "trial"}},
                                   {{"field", "step"}},
                                   {{"field", "value"}, {"title", metric}}})}}}}});
  Chart c;
  c.id = fmt::format("chart-curve-{}", n);
  c.spec = spec;
  c.expected_marks = lines;
  c.caption = metric + " of the best trials, one line each.";
  return c;
}

Chart sampling_chart(const StudyData& study, const SamplingCheck& s) {
  json rows = json::array();
  int marks = 0;
  for (const auto& p : s.curve) {
    if (!std::isfinite(p.median)) continue;
    ++marks;
    rows.push_back({{"n", p.n}, {"median", p.median}, {"p10", p.p10}, {"p90", p.p90}});
  }
  json spec = base_spec("best of n trials (bootstrap)");
  spec["data"] = {{"values", rows}};
  json x{{"field", "n"}, {"type", "quantitative"}, {"title", "trials n"}};
  spec["layer"] = json::array(
      {{{"mark", {{"type", "area"}, {"opacity", 0.25}, {"color", "#4c78a8"}}},
        {"encoding",
         {{"x", x},
          {"y",
           {{"field", "p10"},
            {"type", "quantitative"},
            {"title", "best " + study.objective},
            {"scale", {{"zero", false}}}}},
          {"y2", {{"field", "p90"}}}}}},
       {{"mark", {{"type", "line"}, {"color", "#4c78a8"}}},
        {"encoding", {{"x", x}, {"y", {{"field", "median"}, {"type", "quantitative"}}}}}},
       {{"name", "pb_bootstrap"},
        {"mark", {{"type", "point"}, {"filled", true}, {"size", 18}, {"color", "#4c78a8"}}},
        {"encoding",
         {{"x", x},
          {"y", {{"field", "median"}, {"type", "quantitative"}}},
          {"tooltip", json::array({{{"field", "n"}},
                                   {{"field", "median"}},
                                   {{"field", "p10"}},
                                   {{"field", "p90"}}})}}}}});
  Chart c;
  c.id = "chart-sampling";
  c.spec = spec;
  c.expected_marks = marks;
  c.caption =
      "Median (line) and 10-90% band of the best objective among n trials drawn with "
      "replacement from this study's finished trials.";
  return c;
}

Chart variance_chart(const StudyData& study) {
  json rows = json::array();
  int marks = 0;
  for (const auto& g : study.reruns)
    for (double v : g.objectives)
      if (std::isfinite(v)) {
        rows.push_back({{"group", g.label}, {"y", v}});
        ++marks;
      }
  json originals = json::array();
  for (const auto& g : study.reruns)
    if (g.original && std::isfinite(*g.original))
      originals.push_back({{"group", g.label}, {"y", *g.original}});
  json spec = base_spec("reruns with new seeds");
  spec["data"] = {{"values", rows}};
  json x{{"field", "group"}, {"type", "nominal"}, {"title", "configuration"}};
  json y{{"field", "y"},
         {"type", "quantitative"},
         {"title", study.objective},
         {"scale", {{"zero", false}}}};
  spec["layer"] = json::array(
      {{{"mark", {{"type", "errorbar"}, {"extent", "stdev"}}}, {"encoding", {{"x", x}, {"y", y}}}},
       {{"name", "pb_reruns"},
        {"mark", {{"type", "point"}, {"filled", true}, {"size", 50}}},
        {"encoding", {{"x", x}, {"y", y}}}},
       {{"data", {{"values", originals}}},
        {"mark", {{"type", "tick"}, {"color", "#e45756"}, {"thickness", 2}, {"size", 24}}},
        {"encoding",
         {{"x", x},
          {"y", y},
          {"tooltip", json::array({{{"field", "y"}, {"title", "original run"}}})}}}}});
  Chart c;
  c.id = "chart-variance";
  c.spec = spec;
  c.expected_marks = marks;
  c.caption =
      "One point per rerun with new seeds; bars: mean +- one standard deviation; red "
      "tick: the original run, picked for being best (not counted).";
  return c;
}

std::string verdict_list(const std::vector<std::string>& items) {
  std::string h = "<ul class=\"verdicts\">";
  for (const auto& v : items) h += "<li>" + html_escape(v) + "</li>";
  return h + "</ul>";
}

std::string finding_row(const CurveFinding& f) {
  const char* cls = f.fired ? "bad" : (f.evaluated ? "ok" : "na");
  const char* word = f.fired ? "yes" : (f.evaluated ? "no" : "n/a");
  return fmt::format("<td class=\"{}\" title=\"{}\">{}</td>", cls, html_escape(f.detail), word);
}

}  // namespace

// ---- sections ----------------------------------------------------------------------------------

std::vector<ReportSection> standard_sections(const StudyData& study, const StudyAnalysis& an) {
  std::vector<ReportSection> out;
  const bool none = an.counts.completed == 0;

  // Search space boundaries: the axis plots with the check's verdicts.
  {
    ReportSection s{"axes", "Axis plots and search space boundaries", {}, {}};
    std::vector<std::string> v;
    for (const auto& b : an.boundaries) v.push_back(b.verdict);
    s.html =
        "<p>Objective against each hyperparameter that varies, on its own scale. A best "
        "point near the edge of the range suggests the range is too narrow.</p>" +
        verdict_list(v);
    int n = 0;
    for (size_t i = 0; i < an.axis_plots.size(); ++i)
      s.charts.push_back(axis_chart(study, an, an.axis_plots[i],
                                    i < an.boundaries.size() ? &an.boundaries[i] : nullptr, n++));
    if (an.axis_plots.empty()) s.html += "<p class=\"empty\">No hyperparameter varies.</p>";
    out.push_back(std::move(s));
  }

  // Isolation plots.
  {
    ReportSection s{"isolation", "Isolation plots (scientific hyperparameters)", {}, {}};
    if (an.isolation_plots.empty()) {
      s.html =
          "<p class=\"empty\">This study declares no scientific hyperparameter: there is "
          "nothing to isolate.</p>";
    } else {
      std::vector<std::string> v;
      for (const auto& p : an.isolation_plots) v.push_back(p.verdict);
      s.html = verdict_list(v);
      int n = 0;
      for (const auto& p : an.isolation_plots) s.charts.push_back(isolation_chart(study, p, n++));
    }
    out.push_back(std::move(s));
  }

  // Training curves of the best trials.
  {
    ReportSection s{"curves", "Training curves of the best trials", {}, {}};
    if (an.curves.empty()) {
      s.html = "<p class=\"empty\">No completed trial: no training curve to examine.</p>";
    } else {
      std::string t =
          "<table class=\"findings\"><tr><th>trial</th><th>objective</th><th>overfitting</th>"
          "<th>late variance</th><th>still improving</th><th>saturated early</th></tr>";
      std::vector<std::string> fired;
      for (const auto& d : an.curves) {
        const TrialResult* tr = nullptr;
        for (const auto& x : study.trials)
          if (x.index == d.trial) tr = &x;
        t += fmt::format("<tr><td>{}</td><td>{}</td>", d.trial,
                         tr && tr->objective ? g4(*tr->objective) : "-");
        for (const auto& f : d.findings) {
          t += finding_row(f);
          if (f.fired) fired.push_back(fmt::format("trial {}: {}", d.trial, f.detail));
        }
        t += "</tr>";
      }
      t += "</table><p class=\"hint\">Hover a cell for the numbers behind it.</p>";
      int unchecked = 0;
      for (const auto& d : an.curves)
        for (const auto& f : d.findings) unchecked += !f.evaluated;
      if (fired.empty())
        fired.push_back(unchecked == 0
                            ? "No curve problem found in the best trials."
                            : fmt::format("No curve problem found in the best trials, but {} "
                                          "check(s) could not run (n/a): too few logged or "
                                          "evaluated steps late in training; log and evaluate "
                                          "more often to check them.",
                                          unchecked));
      s.html = verdict_list(fired) + t;
      std::vector<const TrialResult*> best;
      for (size_t i = 0; i < an.ranked.size() && best.size() < 5; ++i)
        for (const auto& x : study.trials)
          if (x.index == an.ranked[i]) best.push_back(&x);
      int n = 0;
      s.charts.push_back(curve_chart(study, best, "train_loss", n++));
      bool err = false;
      for (const auto* b : best) err |= !b->curve.val_error.empty();
      s.charts.push_back(curve_chart(study, best, err ? "val_error" : "val_loss", n++));
    }
    out.push_back(std::move(s));
  }

  // Sampled enough?
  {
    ReportSection s{"sampling", "Have we sampled enough?", {}, {}};
    s.html = verdict_list({an.sampling.verdict});
    if (an.sampling.applicable) s.charts.push_back(sampling_chart(study, an.sampling));
    out.push_back(std::move(s));
  }

  // Trial variance.
  {
    ReportSection s{"variance", "Trial variance", {}, {}};
    if (an.variance) {
      s.html = verdict_list({an.variance->verdict});
      s.charts.push_back(variance_chart(study));
    } else {
      s.html =
          "<p class=\"empty\">No reruns yet. <code>playbook study rerun STUDY_DIR --best K "
          "--seeds S</code> reruns the best trials with new seeds to measure it.</p>";
    }
    out.push_back(std::move(s));
  }

  // Search space and study file.
  {
    ReportSection s{"space", "Search space and study file", {}, {}};
    std::string t =
        "<table><tr><th>hyperparameter</th><th>role</th><th>scale</th>"
        "<th>range / values</th></tr>";
    for (const auto& a : study.axes) {
      std::string range;
      if (a.scale == AxisScale::Categorical) {
        for (const auto& v : a.values) range += (range.empty() ? "" : ", ") + to_string(v);
      } else {
        range = fmt::format("[{}, {}]", g4(a.min), g4(a.max));
      }
      t += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", html_escape(a.name),
                       to_string(a.role), to_string(a.scale), html_escape(range));
    }
    t += "</table>";
    if (!study.study_file.empty())
      t += "<h3>Study file</h3><pre>" + html_escape(study.study_file) + "</pre>";
    s.html = t;
    out.push_back(std::move(s));
  }
  (void)none;
  return out;
}

// ---- the document ------------------------------------------------------------------------------

namespace {

constexpr const char* kStyle = R"css(
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3a5f;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:22px}header p{margin:4px 0 0;opacity:.85}
main{padding:10px 28px 40px;max-width:1320px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:8px 18px 14px;margin:14px 0}
h2{font-size:17px;margin:8px 0}h3{font-size:14px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f2f4f7}
.verdicts li{margin:3px 0}.summary .verdicts li:first-child{font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:6px 0}figcaption{font-size:12px;color:#666;max-width:470px}
td.bad{background:#fde2e1;font-weight:600}td.ok{background:#e5f4e8}td.na{color:#999}
.empty,.hint{color:#777}pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}
.warn{color:#9a5b00}
.kv{margin:4px 0;font-size:13px}.kv code{background:#f6f8fa;padding:1px 4px;word-break:break-all}
)css";

// Collects console errors, uncaught exceptions and rejected promises from the first moment.
constexpr const char* kErrorHook = R"js(
(function(){var e=[];window.__pbErrors=e;var ce=console.error;
console.error=function(){e.push(Array.prototype.map.call(arguments,String).join(' '));return ce.apply(console,arguments);};
window.addEventListener('error',function(ev){e.push('uncaught: '+(ev.message||ev));});
window.addEventListener('unhandledrejection',function(ev){var r=ev.reason;e.push('unhandled rejection: '+(r&&r.message||r));});})();
)js";

// Embeds every chart, counts the rendered marks of layers named pb_*, records the outcome.
constexpr const char* kEmbed = R"js(
(function(){
var body=document.body,errs=window.__pbErrors;body.dataset.pbState='rendering';
function count(el){var n=0;el.querySelectorAll('svg g').forEach(function(g){
  for(var i=0;i<g.classList.length;i++){var c=g.classList[i];
    if(c.indexOf('pb_')===0&&c.slice(-6)==='_marks'){n+=g.children.length;break;}}});return n;}
function finish(done){body.dataset.pbCharts=String(done);body.dataset.pbErrors=String(errs.length);
  document.getElementById('pb-errors').textContent=errs.join('\n');body.dataset.pbState='done';}
var charts;
try{charts=JSON.parse(document.getElementById('pb-charts').textContent);}catch(x){errs.push('chart data: '+x);finish(0);return;}
if(typeof vegaEmbed!=='function'){errs.push('vega-embed did not load');finish(0);return;}
var done=0;
Promise.all(charts.map(function(c){var el=document.getElementById(c.id);
  return vegaEmbed(el,c.spec,{renderer:'svg',actions:false}).then(function(){
    el.dataset.renderedMarks=String(count(el));done++;
  }).catch(function(x){el.dataset.renderedMarks='0';errs.push('chart '+c.id+': '+(x&&x.message||x));});
})).then(function(){finish(done);});
})();
)js";

std::string script_json(const json& j) {
  std::string s = j.dump();
  for (size_t p = 0; (p = s.find("</", p)) != std::string::npos; p += 3) s.replace(p, 2, "<\\/");
  return s;
}

}  // namespace

std::string render_report(const StudyData& study, const StudyAnalysis& an,
                          const ReportAssets& assets, const std::vector<ReportSection>& extra) {
  const std::string name = study.name.empty() ? study.study_dir : study.name;
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">";
  h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">";
  h += "<title>Study report: " + html_escape(name) + "</title><style>" + kStyle + "</style>";
  h += "<script>" + std::string(kErrorHook) + "</script>";
  h += "<script>" + assets.vega + "</script>\n<script>" + assets.vega_lite + "</script>\n<script>" +
       assets.vega_embed + "</script>\n</head>\n<body data-pb-state=\"loading\">\n";

  h += "<header><h1>Study " + html_escape(name) + "</h1><p>" +
       html_escape(fmt::format("{} {} · {} trials: {} completed, {} infeasible, {} failed, "
                               "{} running, {} pending",
                               study.minimize ? "minimize" : "maximize", study.objective,
                               an.counts.total, an.counts.completed, an.counts.infeasible,
                               an.counts.failed, an.counts.running, an.counts.pending));
  h += "</p></header>\n<main>\n";

  // Tracking-table row and the verdicts.
  h += "<section class=\"summary\" id=\"summary\"><h2>Summary</h2>";
  if (!study.tracking.empty()) {
    // Short values in one row (the tracking table's), long ones (params, the reproduce
    // command) as lines of code below it.
    std::vector<std::pair<std::string, std::string>> row, lines;
    for (const auto& kv : study.tracking) (kv.second.size() > 48 ? lines : row).push_back(kv);
    h += "<table class=\"tracking\"><tr>";
    for (const auto& [k, v] : row) h += "<th>" + html_escape(k) + "</th>";
    h += "</tr><tr>";
    for (const auto& [k, v] : row) h += "<td>" + html_escape(v) + "</td>";
    h += "</tr></table>";
    for (const auto& [k, v] : lines)
      h += "<p class=\"kv\"><b>" + html_escape(k) + ":</b> <code>" + html_escape(v) + "</code></p>";
  }
  for (const auto& w : study.warnings) h += "<p class=\"warn\">warning: " + html_escape(w) + "</p>";
  h += verdict_list(an.verdicts) + "</section>\n";

  std::vector<ReportSection> sections = extra;
  for (auto& s : standard_sections(study, an)) sections.push_back(std::move(s));
  json charts = json::array();
  for (const auto& s : sections) {
    h += "<section id=\"" + html_escape(s.id) + "\"><h2>" + html_escape(s.title) + "</h2>" + s.html;
    if (!s.charts.empty()) {
      h += "<div class=\"charts\">";
      for (const auto& c : s.charts) {
        h += fmt::format(
            "<figure><div class=\"pb-chart\" id=\"{}\" data-expected-marks=\"{}\">"
            "</div><figcaption>{}</figcaption></figure>",
            html_escape(c.id), c.expected_marks, html_escape(c.caption));
        charts.push_back({{"id", c.id}, {"spec", c.spec}});
      }
      h += "</div>";
    }
    h += "</section>\n";
  }
  h += "<pre id=\"pb-errors\" hidden></pre>\n";
  h += "<p class=\"hint\">Written by playbook report; charts: " + html_escape(assets.versions) +
       ", inlined (no network needed).</p>\n</main>\n";
  h += "<script type=\"application/json\" id=\"pb-charts\">" + script_json(charts) + "</script>\n";
  h += "<script>" + std::string(kEmbed) + "</script>\n</body></html>\n";
  return h;
}

}  // namespace pb::tuning::insight
