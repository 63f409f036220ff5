// Quasi-random search: radical inverse values, the stratification that scrambling must keep,
// determinism and resumption, the mapping onto linear/log/choice dimensions, and the messages
// of invalid search spaces.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "tuning/quasi_random.h"

namespace pb::tuning {
namespace {

// The stratum of u among n equal intervals of [0,1).
std::size_t stratum(double u, std::uint64_t n) {
  return static_cast<std::size_t>(std::floor(u * static_cast<double>(n)));
}

template <class Exception>
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an exception";
  } catch (const Exception& e) {
    const std::string what = e.what();
    for (const std::string& fragment : fragments) {
      EXPECT_NE(what.find(fragment), std::string::npos)
          << "message lacks \"" << fragment << "\": " << what;
    }
  }
}

// ---- Halton sequence ---------------------------------------------------------------------------

TEST(RadicalInverse, Base2) {
  const double expected[] = {0.0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875, 0.0625};
  for (std::uint64_t i = 0; i < std::size(expected); ++i) {
    EXPECT_EQ(radical_inverse(i, 2), expected[i]) << "index " << i;
  }
}

TEST(RadicalInverse, Base3) {
  const double expected[] = {0.0,     1.0 / 3, 2.0 / 3, 1.0 / 9, 4.0 / 9,
                             7.0 / 9, 2.0 / 9, 5.0 / 9, 8.0 / 9, 1.0 / 27};
  for (std::uint64_t i = 0; i < std::size(expected); ++i) {
    EXPECT_DOUBLE_EQ(radical_inverse(i, 3), expected[i]) << "index " << i;
  }
}

TEST(RadicalInverse, Base5AndLargeIndex) {
  EXPECT_DOUBLE_EQ(radical_inverse(1, 5), 0.2);
  EXPECT_DOUBLE_EQ(radical_inverse(7, 5), 2.0 / 5 + 1.0 / 25);  // 7 = 12 in base 5
  // 2^40 in base 2 mirrors to 2^-41.
  EXPECT_EQ(radical_inverse(std::uint64_t{1} << 40, 2), std::ldexp(1.0, -41));
}

TEST(RadicalInverse, RejectsBadArguments) {
  expect_error<std::invalid_argument>([] { radical_inverse(1, 1); }, {"base 1"});
  expect_error<std::out_of_range>([] { radical_inverse(halton_period(2), 2); }, {"period"});
  EXPECT_EQ(halton_period(2), std::uint64_t{1} << 53);
  EXPECT_EQ(halton_period(3), 5559060566555523ULL);  // 3^33
}

TEST(Primes, First) {
  EXPECT_EQ(first_primes(10), (std::vector<std::uint32_t>{2, 3, 5, 7, 11, 13, 17, 19, 23, 29}));
  EXPECT_EQ(first_primes(100).back(), 541u);
}

TEST(Halton, UnscrambledIsTheRadicalInverseInPrimeBases) {
  const HaltonSequence h(4, {.scrambling = HaltonScrambling::None});
  EXPECT_EQ(h.base(0), 2u);
  EXPECT_EQ(h.base(3), 7u);
  EXPECT_EQ(h.point(0), (std::vector<double>{0.0, 0.0, 0.0, 0.0}));
  for (std::uint64_t i = 0; i < 50; ++i) {
    const std::vector<double> p = h.point(i);
    EXPECT_EQ(p[0], radical_inverse(i, 2));
    EXPECT_EQ(p[1], radical_inverse(i, 3));
    EXPECT_EQ(p[2], radical_inverse(i, 5));
    EXPECT_EQ(p[3], radical_inverse(i, 7));
  }
}

// Each of the b^k strata of [0,1) holds exactly one of points first .. first+b^k-1, for every
// dimension: what scrambling must preserve.
void expect_stratified(const HaltonSequence& h, std::size_t dim, int k, std::uint64_t first) {
  const std::uint32_t b = h.base(dim);
  std::uint64_t n = 1;
  for (int i = 0; i < k; ++i) n *= b;
  std::vector<int> hits(n, 0);
  for (std::uint64_t i = first; i < first + n; ++i) {
    const double u = h.coordinate(i, dim);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ++hits[stratum(u, n)];
  }
  for (std::uint64_t s = 0; s < n; ++s) {
    EXPECT_EQ(hits[s], 1) << "base " << b << ", " << n << " points from " << first << ": stratum "
                          << s;
  }
}

TEST(Halton, ScrambledFirstPointsHitEveryStratumOnce) {
  for (const std::uint64_t seed : {0ULL, 1ULL, 42ULL, 0xdeadbeefULL}) {
    const HaltonSequence h(6, {.seed = seed});
    expect_stratified(h, 0, 3, 0);  // base 2, 8 points
    expect_stratified(h, 1, 2, 0);  // base 3, 9 points
    expect_stratified(h, 2, 2, 0);  // base 5, 25 points
    expect_stratified(h, 5, 1, 0);  // base 13, 13 points
    // Any aligned block, not only the first.
    expect_stratified(h, 0, 4, 16 * 5);
    expect_stratified(h, 1, 3, 27 * 2);
  }
}

TEST(Halton, ScramblingIsAPermutationOfDigits) {
  // Points whose indices share their low digit share their top-level stratum, and the map from
  // low digit to stratum is a bijection: the scrambled sequence reorders the strata
  // consistently.
  const HaltonSequence h(2, {.seed = 7});
  for (std::size_t dim = 0; dim < 2; ++dim) {
    const std::uint32_t b = h.base(dim);
    std::vector<std::size_t> stratum_of_digit(b);
    std::set<std::size_t> seen;
    for (std::uint32_t d = 0; d < b; ++d) {
      stratum_of_digit[d] = stratum(h.coordinate(d, dim), b);
      seen.insert(stratum_of_digit[d]);
    }
    EXPECT_EQ(seen.size(), b);
    for (std::uint64_t i = 0; i < 200; ++i) {
      EXPECT_EQ(stratum(h.coordinate(i, dim), b), stratum_of_digit[i % b]) << "index " << i;
    }
  }
}

TEST(Halton, ScrambledFirstPointIsNotTheOrigin) {
  const HaltonSequence h(5, {.seed = 3});
  for (const double u : h.point(0)) EXPECT_GT(u, 0.0);
}

TEST(Halton, DeterministicForASeed) {
  const HaltonSequence a(5, {.seed = 123});
  const HaltonSequence b(5, {.seed = 123});
  for (std::uint64_t i = 0; i < 100; ++i) EXPECT_EQ(a.point(i), b.point(i));
  EXPECT_EQ(a.points(10, 5), b.points(10, 5));
}

TEST(Halton, DifferentSeedsDiffer) {
  const HaltonSequence a(5, {.seed = 1});
  const HaltonSequence b(5, {.seed = 2});
  for (std::size_t dim = 0; dim < 5; ++dim) {
    int same = 0;
    for (std::uint64_t i = 0; i < 20; ++i) same += a.coordinate(i, dim) == b.coordinate(i, dim);
    EXPECT_LT(same, 20) << "dimension " << dim;
  }
}

// Pinned values: a seed must give these points on every platform and in every later version,
// or studies recorded earlier can no longer be reproduced. Change only deliberately.
TEST(Halton, PinnedValuesForSeed42) {
  const HaltonSequence h(4, {.seed = 42});
  const std::vector<std::vector<double>> expected = {
      {0.74159305875080894, 0.95222156534013014, 0.57650727881646746, 0.88058915625900691},
      {0.24159305875080894, 0.61888823200679688, 0.97650727881646748, 0.16630344197329261},
      {0.99159305875080894, 0.28555489867346351, 0.37650727881646751, 0.023446299116149753},
  };
  EXPECT_EQ(h.points(0, 3), expected);
}

TEST(Halton, SkipResumesTheSequence) {
  const HaltonSequence full(3, {.seed = 9});
  const HaltonSequence resumed(3, {.seed = 9, .skip = 17});
  for (std::uint64_t i = 0; i < 30; ++i) EXPECT_EQ(resumed.point(i), full.point(17 + i));
}

TEST(Halton, CoordinatesAreUniformOnAverage) {
  const HaltonSequence h(10, {.seed = 5});
  std::vector<double> mean(10, 0.0);
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    const std::vector<double> p = h.point(static_cast<std::uint64_t>(i));
    for (std::size_t j = 0; j < p.size(); ++j) mean[j] += p[j] / n;
  }
  for (std::size_t j = 0; j < mean.size(); ++j) EXPECT_NEAR(mean[j], 0.5, 0.01) << "dim " << j;
}

TEST(Halton, RejectsBadDimensionsAndIndices) {
  expect_error<std::invalid_argument>([] { HaltonSequence h(0); }, {"0 dimensions"});
  expect_error<std::invalid_argument>([] { HaltonSequence h(kMaxHaltonDims + 1); },
                                      {"101 dimensions", "1 to 100"});
  const HaltonSequence h(2, {.skip = 10});
  EXPECT_EQ(h.max_index(), halton_period(3));
  expect_error<std::out_of_range>([&] { h.point(h.max_index() - 5); }, {"skip 10", "beyond"});
  expect_error<std::out_of_range>([&] { h.base(2); }, {"dimension 2"});
}

// ---- mapping -----------------------------------------------------------------------------------

TEST(Mapping, Linear) {
  const Dimension d{.name = "momentum", .scale = Dimension::Scale::Linear, .min = 0.8, .max = 1.0};
  EXPECT_EQ(map_unit(d, 0.0), 0.8);
  EXPECT_DOUBLE_EQ(map_unit(d, 0.5), 0.9);
  EXPECT_EQ(map_unit(d, 1.0), 1.0);
}

TEST(Mapping, LogEndpointsAndGeometricMidpoint) {
  const Dimension d{.name = "lr", .scale = Dimension::Scale::Log, .min = 1e-4, .max = 1.0};
  EXPECT_EQ(map_unit(d, 0.0), 1e-4);
  EXPECT_EQ(map_unit(d, 1.0), 1.0);
  EXPECT_NEAR(map_unit(d, std::nextafter(1.0, 0.0)), 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(map_unit(d, 0.5), std::sqrt(1e-4 * 1.0));  // geometric mean, 1e-2
  EXPECT_DOUBLE_EQ(map_unit(d, 0.25), 1e-3);
  const Dimension wd{.name = "wd", .scale = Dimension::Scale::Log, .min = 2.0, .max = 8.0};
  EXPECT_DOUBLE_EQ(map_unit(wd, 0.5), 4.0);
}

TEST(Mapping, ChoiceOwnsEqualIntervals) {
  const Choice c{.name = "optimizer",
                 .values = {std::string("sgd"), std::string("adam"), std::string("nadam")}};
  EXPECT_EQ(map_unit(c, 0.0), ParamValue(std::string("sgd")));
  EXPECT_EQ(map_unit(c, 0.34), ParamValue(std::string("adam")));
  EXPECT_EQ(map_unit(c, 0.99), ParamValue(std::string("nadam")));
  EXPECT_EQ(map_unit(c, 1.0), ParamValue(std::string("nadam")));
}

TEST(Mapping, RejectsUOutsideUnitInterval) {
  const Dimension d{.name = "lr", .scale = Dimension::Scale::Log, .min = 1e-4, .max = 1.0};
  expect_error<std::invalid_argument>([&] { map_unit(d, 1.5); }, {"\"lr\"", "outside [0, 1]"});
  expect_error<std::invalid_argument>([&] { map_unit(d, std::nan("")); }, {"\"lr\"", "nan"});
  const Choice c{.name = "opt", .values = {std::string("sgd")}};
  expect_error<std::invalid_argument>([&] { map_unit(c, -0.1); }, {"\"opt\"", "outside"});
}

TEST(ParamValues, ToString) {
  EXPECT_EQ(to_string(ParamValue(true)), "true");
  EXPECT_EQ(to_string(ParamValue(std::int64_t{128})), "128");
  EXPECT_EQ(to_string(ParamValue(0.001)), "0.001");
  EXPECT_EQ(to_string(ParamValue(std::string("sgd"))), "sgd");
}

// ---- search space and quasi-random search
// --------------------------------------------------------

SearchSpace example_space() {
  SearchSpace space;
  space
      .add(Choice{.name = "batch_size",
                  .values = {std::int64_t{64}, std::int64_t{128}, std::int64_t{256},
                             std::int64_t{512}}})  // base 2
      .add(Choice{
          .name = "optimizer",
          .values = {std::string("sgd"), std::string("momentum"), std::string("adam")}})  // base 3
      .add(Dimension{.name = "lr", .scale = Dimension::Scale::Log, .min = 1e-4, .max = 1e-1})
      .add(Dimension{.name = "label_smoothing", .min = 0.0, .max = 0.2});
  return space;
}

TEST(QuasiRandomSearch, ChoicesAreCoveredEqually) {
  // Choice counts that divide b^k are covered exactly equally by the first b^k trials: 4
  // values on the base-2 axis over 8 trials, 3 values on the base-3 axis over 9 trials.
  for (const std::uint64_t seed : {0ULL, 11ULL, 2024ULL}) {
    const QuasiRandomSearch search(example_space(), {.seed = seed});
    std::map<std::string, int> batch_sizes;
    std::map<std::string, int> optimizers;
    for (std::uint64_t t = 0; t < 8; ++t) ++batch_sizes[to_string(search.suggest(t)[0].value)];
    for (std::uint64_t t = 0; t < 9; ++t) ++optimizers[to_string(search.suggest(t)[1].value)];
    EXPECT_EQ(batch_sizes,
              (std::map<std::string, int>{{"128", 2}, {"256", 2}, {"512", 2}, {"64", 2}}));
    EXPECT_EQ(optimizers, (std::map<std::string, int>{{"adam", 3}, {"momentum", 3}, {"sgd", 3}}));
  }
}

TEST(QuasiRandomSearch, SuggestsNamedValuesInRange) {
  const QuasiRandomSearch search(example_space(), {.seed = 4});
  for (std::uint64_t t = 0; t < 100; ++t) {
    const Params p = search.suggest(t);
    ASSERT_EQ(p.size(), 4u);
    EXPECT_EQ(p[0].name, "batch_size");
    EXPECT_TRUE(std::holds_alternative<std::int64_t>(p[0].value));
    EXPECT_TRUE(std::holds_alternative<std::string>(p[1].value));
    EXPECT_EQ(p[2].name, "lr");
    const double lr = std::get<double>(p[2].value);
    EXPECT_GE(lr, 1e-4);
    EXPECT_LE(lr, 1e-1);
    const double ls = std::get<double>(p[3].value);
    EXPECT_GE(ls, 0.0);
    EXPECT_LE(ls, 0.2);
  }
}

TEST(QuasiRandomSearch, LogDimensionIsUniformInLogSpace) {
  // lr is dimension 2 (base 5): its first 25 trials put one value in each 25th of
  // [log10 1e-4, log10 1e-1].
  const QuasiRandomSearch search(example_space(), {.seed = 8});
  std::vector<int> hits(25, 0);
  for (std::uint64_t t = 0; t < 25; ++t) {
    const double lr = std::get<double>(search.suggest(t)[2].value);
    const double u = (std::log10(lr) + 4.0) / 3.0;
    ++hits[std::min<std::size_t>(stratum(u, 25), 24)];
  }
  for (int h : hits) EXPECT_EQ(h, 1);
}

TEST(QuasiRandomSearch, ResumesWithSkipAndReproducesWithSeed) {
  const QuasiRandomSearch a(example_space(), {.seed = 77});
  const QuasiRandomSearch b(example_space(), {.seed = 77, .skip = 5});
  for (std::uint64_t t = 0; t < 10; ++t) {
    const Params pa = a.suggest(t + 5);
    const Params pb = b.suggest(t);
    ASSERT_EQ(pa.size(), pb.size());
    for (std::size_t j = 0; j < pa.size(); ++j) EXPECT_EQ(pa[j].value, pb[j].value);
  }
}

// ---- invalid spaces --------------------------------------------------------------------------

TEST(SearchSpaceErrors, MessagesNameTheDimension) {
  SearchSpace space;
  expect_error<std::invalid_argument>(
      [&] { space.add(Dimension{.name = "lr", .min = 0.1, .max = 0.01}); },
      {"\"lr\"", "min (0.1) must be less than max (0.01)"});
  expect_error<std::invalid_argument>(
      [&] { space.add(Dimension{.name = "wd", .min = 0.5, .max = 0.5}); },
      {"\"wd\"", "must be less than max"});
  expect_error<std::invalid_argument>(
      [&] {
        space.add(Dimension{.name = "lr", .scale = Dimension::Scale::Log, .min = 0.0, .max = 1.0});
      },
      {"\"lr\"", "log scale needs min > 0", "got min 0"});
  expect_error<std::invalid_argument>(
      [&] {
        space.add(Dimension{.name = "eps", .scale = Dimension::Scale::Log, .min = -1, .max = 1});
      },
      {"\"eps\"", "log scale needs min > 0"});
  expect_error<std::invalid_argument>(
      [&] { space.add(Dimension{.name = "x", .min = 0.0, .max = INFINITY}); }, {"\"x\"", "finite"});
  expect_error<std::invalid_argument>([&] { space.add(Choice{.name = "optimizer", .values = {}}); },
                                      {"\"optimizer\"", "empty"});
  expect_error<std::invalid_argument>(
      [&] {
        space.add(Choice{.name = "act", .values = {std::string("relu"), std::string("relu")}});
      },
      {"\"act\"", "relu", "twice"});
  expect_error<std::invalid_argument>([&] { space.add(Dimension{.name = "", .max = 2.0}); },
                                      {"dimension #0", "empty name"});
  EXPECT_TRUE(space.empty());  // nothing invalid was added

  space.add(Dimension{.name = "lr", .scale = Dimension::Scale::Log, .min = 1e-3, .max = 1.0});
  expect_error<std::invalid_argument>([&] { space.add(Choice{.name = "lr", .values = {1.0}}); },
                                      {"\"lr\"", "already used"});
  expect_error<std::invalid_argument>([&] { space.add(Choice{.name = "", .values = {1.0}}); },
                                      {"choice #1", "empty name"});
  EXPECT_EQ(space.size(), 1u);
}

TEST(SearchSpaceErrors, StandaloneValidationNamesEmptyNamedDimensions) {
  expect_error<std::invalid_argument>(
      [] { validate(Dimension{.name = "", .scale = Dimension::Scale::Log, .min = 1, .max = 2}); },
      {"empty name", "log scale"});
  expect_error<std::invalid_argument>([] { validate(Choice{}); }, {"empty name"});
}

TEST(SearchSpaceErrors, EmptySpaceAndWrongArity) {
  expect_error<std::invalid_argument>([] { QuasiRandomSearch search(SearchSpace{}); },
                                      {"no dimensions"});
  const SearchSpace space = example_space();
  const std::vector<double> u = {0.5, 0.5};
  expect_error<std::invalid_argument>([&] { space.map(u); }, {"2 coordinates", "4 dimensions"});
}

}  // namespace
}  // namespace pb::tuning
