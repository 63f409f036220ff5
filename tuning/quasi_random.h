#pragma once
// Quasi-random search: the sampler the Tuning Playbook recommends for the exploration phase
// ("Why use quasi-random search instead of more sophisticated black box optimization
// algorithms..."): a scrambled Halton sequence, mapped onto a search space. It is
// non-adaptive, so trials can run in any order and in parallel, and it is fully determined by
// (search space, seed), so a study is reproducible and resumable from any trial index.
//
// Halton sequence. Coordinate j of point n is the radical inverse of n in base p_j, the j-th
// prime: write n = sum_k d_k p^k and mirror the digits about the radix point,
//   u = sum_k d_k p^-(k+1).
// In base 2 this gives 0, 1/2, 1/4, 3/4, 1/8, ...; the first p^k points of coordinate j fall
// one in each of the p^k intervals [s/p^k, (s+1)/p^k), and so does every aligned block of p^k
// consecutive points.
//
// Scrambling (HaltonScrambling::RandomDigitPermutation). Plain Halton is deterministic, its
// first point is the origin, and its high dimensions are strongly correlated. We replace each
// digit d_k by pi_{j,k}(d_k), where pi_{j,k} is an independent, uniformly random permutation of
// {0,...,p-1} for every dimension j and digit position k, drawn from the seed. This is Owen's
// nested scrambling restricted to permutations that depend on the digit position only (not on
// the digits before it), i.e. random digit scrambling with a per-position random digital shift
// included. Because pi may move 0, the digit positions above n's own digits are scrambled too:
// every coordinate uses exactly K_p digit positions, where K_p is the largest K with
// p^K <= 2^53, and is computed exactly as the integer sum_k pi_k(d_k) p^(K-1-k) divided by
// p^K (one rounding). So there is no infinite-tail bias (the reason fixed-0 permutations are
// used elsewhere), point 0 is not the origin, and the stratification above is preserved exactly:
// a bijection on each digit maps the p^k strata of an aligned block onto themselves.
//
// Determinism. Permutations come from SplitMix64 and a rejection-sampled Fisher-Yates shuffle,
// never from <random> distributions (whose output differs between standard libraries), so a
// seed gives the same points on every platform and compiler. The pinned-value test in
// tests/tuning/test_quasi_random.cpp guards this: changing it breaks old studies.
//
// Search space. Dimensions are mapped in the order they were added; the first dimensions get
// the smallest bases and so the best uniformity for few trials: put the most important
// hyperparameters (learning rate first) at the front.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace pb::tuning {

// ---- Halton sequence ---------------------------------------------------------------------------

// The radical inverse of index in base (unscrambled), in [0,1). Requires 2 <= base <= 2^16 and
// index < halton_period(base); throws std::invalid_argument / std::out_of_range otherwise.
double radical_inverse(std::uint64_t index, std::uint32_t base);

// p^K for the largest K with p^K <= 2^53: the number of distinct points of one coordinate.
std::uint64_t halton_period(std::uint32_t base);

// The first count primes: 2, 3, 5, 7, ...
std::vector<std::uint32_t> first_primes(std::size_t count);

enum class HaltonScrambling {
  None,                    // the plain Halton sequence; point 0 is the origin
  RandomDigitPermutation,  // seeded permutation per (dimension, digit position); see above
};

struct HaltonOptions {
  std::uint64_t seed = 0;
  std::uint64_t skip = 0;  // point(i) is element skip + i of the sequence
  HaltonScrambling scrambling = HaltonScrambling::RandomDigitPermutation;
};

// Halton beyond a few dozen dimensions is poorly distributed for any affordable number of
// trials; hyperparameter spaces have a handful. The cap also bounds the permutation tables.
inline constexpr std::size_t kMaxHaltonDims = 100;

// A (scrambled) Halton sequence in [0,1)^dims. Index-addressable: point(i) depends only on
// (dims, options, i), so a study resumes at any trial.
class HaltonSequence {
 public:
  // Throws std::invalid_argument unless 1 <= dims <= kMaxHaltonDims.
  explicit HaltonSequence(std::size_t dims, HaltonOptions options = {});

  std::size_t dims() const { return axes_.size(); }
  const HaltonOptions& options() const { return options_; }
  std::uint32_t base(std::size_t dim) const;

  // The number of distinct points: indices skip + i must stay below it (std::out_of_range).
  std::uint64_t max_index() const { return max_index_; }

  // Coordinate dim of point i, in [0,1).
  double coordinate(std::uint64_t i, std::size_t dim) const;
  // Point i: (dims) values in [0,1).
  std::vector<double> point(std::uint64_t i) const;
  // Points first .. first+count-1: (count, dims).
  std::vector<std::vector<double>> points(std::uint64_t first, std::size_t count) const;

 private:
  struct Axis {
    std::uint32_t base = 0;
    int digits = 0;                   // K: digit positions used
    std::uint64_t period = 0;         // base^K
    std::vector<std::uint32_t> perm;  // (digits, base): pi_k(d) at [k*base + d]; empty if None
  };

  HaltonOptions options_;
  std::vector<Axis> axes_;
  std::uint64_t max_index_ = 0;
};

// ---- search space ------------------------------------------------------------------------------

// A hyperparameter value: choices may be booleans, integers, reals or strings; continuous
// dimensions give doubles.
using ParamValue = std::variant<bool, std::int64_t, double, std::string>;

// "true", "128", "0.001" (shortest round-trip form), "sgd".
std::string to_string(const ParamValue& value);

// A continuous dimension over [min, max], sampled uniformly on a linear or log scale, or on a
// reverse-log scale: uniform in log(1 - x), for values just below 1 such as momentum or Adam's
// beta2 (0.9, 0.99 and 0.999 are equally far apart).
struct Dimension {
  enum class Scale { Linear, Log, ReverseLog };
  std::string name;
  Scale scale = Scale::Linear;
  double min = 0.0;
  double max = 1.0;
};

// A discrete dimension: one of values, each with equal probability.
struct Choice {
  std::string name;
  std::vector<ParamValue> values;
};

using SearchDimension = std::variant<Dimension, Choice>;

// Throw std::invalid_argument naming the dimension when it is invalid: empty name; non-finite
// bounds or min >= max; log scale with min <= 0; reverse-log scale with max >= 1; no choice
// values or a repeated value.
void validate(const Dimension& dim);
void validate(const Choice& choice);

// u in [0,1] to [min, max]: linear min + u (max - min); log min (max/min)^u, so u = 0 gives
// min, u = 1 max and u = 1/2 the geometric mean; reverse-log 1 - (1-min) ((1-max)/(1-min))^u,
// again u = 0 gives min and u = 1 max. Throws std::invalid_argument for u outside
// [0,1] or an invalid dimension.
double map_unit(const Dimension& dim, double u);
// u in [0,1] to values[floor(u n)] (u = 1 gives the last): every value owns an interval of
// length 1/n.
const ParamValue& map_unit(const Choice& choice, double u);

struct Assignment {
  std::string name;
  ParamValue value;
};
using Params = std::vector<Assignment>;  // in search-space order

// An ordered list of uniquely named, validated dimensions.
class SearchSpace {
 public:
  // Each throws std::invalid_argument naming the dimension when it is invalid or its name is
  // already taken.
  SearchSpace& add(Dimension dim);
  SearchSpace& add(Choice choice);

  std::size_t size() const { return dims_.size(); }
  bool empty() const { return dims_.empty(); }
  const std::vector<SearchDimension>& dimensions() const { return dims_; }

  // u: (size()) values in [0,1] to one value per dimension.
  Params map(std::span<const double> u) const;

 private:
  void check_new_name(const std::string& name, std::string_view what) const;

  std::vector<SearchDimension> dims_;
};

std::string_view name_of(const SearchDimension& dim);

// Quasi-random search over a space: trial i gets point i of a scrambled Halton sequence with
// one dimension per search-space dimension, mapped into the space.
class QuasiRandomSearch {
 public:
  // Throws std::invalid_argument when the space is empty or too large for HaltonSequence.
  explicit QuasiRandomSearch(SearchSpace space, HaltonOptions options = {});

  const SearchSpace& space() const { return space_; }
  const HaltonSequence& sequence() const { return sequence_; }

  // The parameters of trial i (i.e. of sequence element options.skip + i).
  Params suggest(std::uint64_t trial) const;

 private:
  static std::size_t checked_dims(const SearchSpace& space);

  SearchSpace space_;
  HaltonSequence sequence_;
};

}  // namespace pb::tuning
