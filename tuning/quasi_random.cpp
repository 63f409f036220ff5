// Scrambled Halton sequence and its mapping onto a search space; see quasi_random.h for the
// construction and the reasons behind it.

#include "tuning/quasi_random.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>

namespace pb::tuning {
namespace {

constexpr std::uint64_t kExactIntegerLimit = std::uint64_t{1} << 53;  // doubles hold all below
constexpr std::uint32_t kMaxBase = std::uint32_t{1} << 16;

// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-mixed generator whose output is fixed by
// its definition, so seeds reproduce everywhere.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n >= 1, by rejection (no modulo bias).
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t threshold = (0 - n) % n;  // 2^64 mod n
    for (;;) {
      const std::uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }

 private:
  std::uint64_t state_;
};

// The stream for one dimension: a function of (seed, dim) only.
std::uint64_t dimension_seed(std::uint64_t seed, std::size_t dim) {
  SplitMix64 mix(seed);
  const std::uint64_t a = mix.next();
  SplitMix64 mix_dim(a ^ (0xd1b54a32d192ed03ULL * (static_cast<std::uint64_t>(dim) + 1)));
  return mix_dim.next();
}

void check_base(std::uint32_t base) {
  if (base < 2 || base > kMaxBase) {
    throw std::invalid_argument("halton: base " + std::to_string(base) + " is outside [2, " +
                                std::to_string(kMaxBase) + "]");
  }
}

// K (digit positions) and base^K for the largest K with base^K <= 2^53.
std::pair<int, std::uint64_t> digits_and_period(std::uint32_t base) {
  int digits = 0;
  std::uint64_t period = 1;
  while (period <= kExactIntegerLimit / base) {
    period *= base;
    ++digits;
  }
  return {digits, period};
}

std::string format_double(double x) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), x);
  if (ec != std::errc()) return std::to_string(x);
  return std::string(buf, end);
}

[[noreturn]] void invalid(std::string_view what, std::string_view name, const std::string& msg) {
  throw std::invalid_argument("search space: " + std::string(what) + " \"" + std::string(name) +
                              "\": " + msg);
}

void check_unit(std::string_view what, std::string_view name, double u) {
  if (!(u >= 0.0 && u <= 1.0)) {
    invalid(what, name, "u = " + format_double(u) + " is outside [0, 1]");
  }
}

}  // namespace

// ---- Halton sequence ---------------------------------------------------------------------------

std::uint64_t halton_period(std::uint32_t base) {
  check_base(base);
  return digits_and_period(base).second;
}

double radical_inverse(std::uint64_t index, std::uint32_t base) {
  check_base(base);
  const auto [digits, period] = digits_and_period(base);
  if (index >= period) {
    throw std::out_of_range("halton: index " + std::to_string(index) + " is beyond the period " +
                            std::to_string(period) + " of base " + std::to_string(base));
  }
  // Mirror the K digits of index: numerator = sum_k d_k base^(K-1-k) < base^K <= 2^53.
  std::uint64_t numerator = 0;
  for (int k = 0; k < digits; ++k) {
    numerator = numerator * base + index % base;
    index /= base;
  }
  return static_cast<double>(numerator) / static_cast<double>(period);
}

std::vector<std::uint32_t> first_primes(std::size_t count) {
  std::vector<std::uint32_t> primes;
  primes.reserve(count);
  for (std::uint32_t candidate = 2; primes.size() < count; ++candidate) {
    bool prime = true;
    for (const std::uint32_t p : primes) {
      if (p * p > candidate) break;
      if (candidate % p == 0) {
        prime = false;
        break;
      }
    }
    if (prime) primes.push_back(candidate);
  }
  return primes;
}

HaltonSequence::HaltonSequence(std::size_t dims, HaltonOptions options) : options_(options) {
  if (dims == 0 || dims > kMaxHaltonDims) {
    throw std::invalid_argument("halton: " + std::to_string(dims) +
                                " dimensions requested; supported are 1 to " +
                                std::to_string(kMaxHaltonDims));
  }
  const std::vector<std::uint32_t> bases = first_primes(dims);
  axes_.resize(dims);
  max_index_ = std::numeric_limits<std::uint64_t>::max();
  for (std::size_t j = 0; j < dims; ++j) {
    Axis& axis = axes_[j];
    axis.base = bases[j];
    std::tie(axis.digits, axis.period) = digits_and_period(axis.base);
    max_index_ = std::min(max_index_, axis.period);
    if (options_.scrambling == HaltonScrambling::None) continue;
    // One independent uniform permutation of {0..base-1} per digit position (Fisher-Yates).
    SplitMix64 rng(dimension_seed(options_.seed, j));
    axis.perm.resize(static_cast<std::size_t>(axis.digits) * axis.base);
    for (int k = 0; k < axis.digits; ++k) {
      std::uint32_t* perm = axis.perm.data() + static_cast<std::size_t>(k) * axis.base;
      for (std::uint32_t d = 0; d < axis.base; ++d) perm[d] = d;
      for (std::uint32_t d = axis.base - 1; d > 0; --d) {
        std::swap(perm[d], perm[rng.below(std::uint64_t{d} + 1)]);
      }
    }
  }
}

std::uint32_t HaltonSequence::base(std::size_t dim) const {
  if (dim >= axes_.size()) {
    throw std::out_of_range("halton: dimension " + std::to_string(dim) + " of " +
                            std::to_string(axes_.size()));
  }
  return axes_[dim].base;
}

double HaltonSequence::coordinate(std::uint64_t i, std::size_t dim) const {
  const Axis& axis = axes_.at(dim);
  if (i >= max_index_ || options_.skip >= max_index_ - i) {
    throw std::out_of_range("halton: point " + std::to_string(i) + " with skip " +
                            std::to_string(options_.skip) + " is beyond the sequence's " +
                            std::to_string(max_index_) + " distinct points");
  }
  std::uint64_t n = options_.skip + i;
  // numerator = sum_k pi_k(d_k) base^(K-1-k), built from the least significant digit of n
  // (the most significant of the result) down.
  std::uint64_t numerator = 0;
  for (int k = 0; k < axis.digits; ++k) {
    const auto digit = static_cast<std::uint32_t>(n % axis.base);
    n /= axis.base;
    const std::uint32_t scrambled =
        axis.perm.empty() ? digit : axis.perm[static_cast<std::size_t>(k) * axis.base + digit];
    numerator = numerator * axis.base + scrambled;
  }
  // numerator <= base^K - 1 <= 2^53 - 1, so the quotient rounds to at most 1 - 2^-53 < 1.
  return static_cast<double>(numerator) / static_cast<double>(axis.period);
}

std::vector<double> HaltonSequence::point(std::uint64_t i) const {
  std::vector<double> u(axes_.size());
  for (std::size_t j = 0; j < axes_.size(); ++j) u[j] = coordinate(i, j);
  return u;
}

std::vector<std::vector<double>> HaltonSequence::points(std::uint64_t first,
                                                        std::size_t count) const {
  std::vector<std::vector<double>> out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i) out.push_back(point(first + i));
  return out;
}

// ---- search space ------------------------------------------------------------------------------

std::string to_string(const ParamValue& value) {
  struct Visitor {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(std::int64_t x) const { return std::to_string(x); }
    std::string operator()(double x) const { return format_double(x); }
    std::string operator()(const std::string& s) const { return s; }
  };
  return std::visit(Visitor{}, value);
}

void validate(const Dimension& dim) {
  const char* scale = dim.scale == Dimension::Scale::Log          ? "log"
                      : dim.scale == Dimension::Scale::ReverseLog ? "reverse-log"
                                                                  : "linear";
  if (dim.name.empty()) {
    throw std::invalid_argument("search space: a dimension has an empty name (" +
                                std::string(scale) + " scale, min " + format_double(dim.min) +
                                ", max " + format_double(dim.max) + ")");
  }
  if (!std::isfinite(dim.min) || !std::isfinite(dim.max)) {
    invalid("dimension", dim.name,
            "min and max must be finite (got min " + format_double(dim.min) + ", max " +
                format_double(dim.max) + ")");
  }
  if (!(dim.min < dim.max)) {
    invalid("dimension", dim.name,
            "min (" + format_double(dim.min) + ") must be less than max (" +
                format_double(dim.max) + ")");
  }
  if (dim.scale == Dimension::Scale::Log && !(dim.min > 0.0)) {
    invalid("dimension", dim.name,
            "log scale needs min > 0 (got min " + format_double(dim.min) + ")");
  }
  if (dim.scale == Dimension::Scale::ReverseLog && !(dim.max < 1.0)) {
    invalid("dimension", dim.name,
            "reverse-log scale needs max < 1 (got max " + format_double(dim.max) + ")");
  }
}

void validate(const Choice& choice) {
  if (choice.name.empty()) {
    throw std::invalid_argument("search space: a choice has an empty name (" +
                                std::to_string(choice.values.size()) + " values)");
  }
  if (choice.values.empty()) invalid("choice", choice.name, "the list of values is empty");
  for (std::size_t i = 0; i < choice.values.size(); ++i) {
    for (std::size_t k = 0; k < i; ++k) {
      if (choice.values[k] == choice.values[i]) {
        invalid("choice", choice.name,
                "value " + to_string(choice.values[i]) + " is listed twice (positions " +
                    std::to_string(k) + " and " + std::to_string(i) + ")");
      }
    }
  }
}

double map_unit(const Dimension& dim, double u) {
  validate(dim);
  check_unit("dimension", dim.name, u);
  double x = 0.0;
  if (dim.scale == Dimension::Scale::Linear) {
    x = std::lerp(dim.min, dim.max, u);
  } else if (dim.scale == Dimension::Scale::ReverseLog) {
    if (u == 0.0) return dim.min;
    if (u == 1.0) return dim.max;
    x = 1.0 - std::exp(std::lerp(std::log1p(-dim.min), std::log1p(-dim.max), u));
  } else {
    if (u == 0.0) return dim.min;
    if (u == 1.0) return dim.max;
    x = std::exp(std::lerp(std::log(dim.min), std::log(dim.max), u));
  }
  return std::clamp(x, dim.min, dim.max);
}

const ParamValue& map_unit(const Choice& choice, double u) {
  validate(choice);
  check_unit("choice", choice.name, u);
  const std::size_t n = choice.values.size();
  const auto index = static_cast<std::size_t>(std::floor(u * static_cast<double>(n)));
  return choice.values[std::min(index, n - 1)];
}

std::string_view name_of(const SearchDimension& dim) {
  return std::visit([](const auto& d) -> std::string_view { return d.name; }, dim);
}

void SearchSpace::check_new_name(const std::string& name, std::string_view what) const {
  if (name.empty()) {
    throw std::invalid_argument("search space: " + std::string(what) + " #" +
                                std::to_string(dims_.size()) + " has an empty name");
  }
  for (const SearchDimension& existing : dims_) {
    if (name_of(existing) == name) invalid(what, name, "the name is already used");
  }
}

SearchSpace& SearchSpace::add(Dimension dim) {
  check_new_name(dim.name, "dimension");
  validate(dim);
  dims_.emplace_back(std::move(dim));
  return *this;
}

SearchSpace& SearchSpace::add(Choice choice) {
  check_new_name(choice.name, "choice");
  validate(choice);
  dims_.emplace_back(std::move(choice));
  return *this;
}

Params SearchSpace::map(std::span<const double> u) const {
  if (u.size() != dims_.size()) {
    throw std::invalid_argument("search space: got " + std::to_string(u.size()) +
                                " coordinates for " + std::to_string(dims_.size()) + " dimensions");
  }
  Params params;
  params.reserve(dims_.size());
  for (std::size_t j = 0; j < dims_.size(); ++j) {
    if (const auto* dim = std::get_if<Dimension>(&dims_[j])) {
      params.push_back({dim->name, ParamValue(map_unit(*dim, u[j]))});
    } else {
      const auto& choice = std::get<Choice>(dims_[j]);
      params.push_back({choice.name, map_unit(choice, u[j])});
    }
  }
  return params;
}

// ---- quasi-random search -----------------------------------------------------------------------

std::size_t QuasiRandomSearch::checked_dims(const SearchSpace& space) {
  if (space.empty()) {
    throw std::invalid_argument("quasi-random search: the search space has no dimensions");
  }
  if (space.size() > kMaxHaltonDims) {
    throw std::invalid_argument("quasi-random search: the search space has " +
                                std::to_string(space.size()) + " dimensions; at most " +
                                std::to_string(kMaxHaltonDims) + " are supported");
  }
  return space.size();
}

QuasiRandomSearch::QuasiRandomSearch(SearchSpace space, HaltonOptions options)
    : space_(std::move(space)), sequence_(checked_dims(space_), options) {}

Params QuasiRandomSearch::suggest(std::uint64_t trial) const {
  const std::vector<double> u = sequence_.point(trial);
  return space_.map(u);
}

}  // namespace pb::tuning
