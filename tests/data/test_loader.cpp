// DataLoader: epoch coverage and reshuffling, batch contents against the augmenter applied by
// hand, bitwise-identical output for 0, 1 and 3 workers, the padded last evaluation batch,
// resume through state()/seek(), destruction mid-stream, and configuration errors.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/data/dataset.h"
#include "runtime/data/loader.h"

namespace pb::data {
namespace {

template <typename E>
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an exception with \"" << *fragments.begin() << "\"";
  } catch (const E& e) {
    const std::string what = e.what();
    for (const std::string& fragment : fragments) {
      EXPECT_NE(what.find(fragment), std::string::npos)
          << "message lacks \"" << fragment << "\": " << what;
    }
  }
}

// `count` examples of (C,H,W) = (2,5,6) with label = index (so num_classes = count) and pixels
// that differ between examples.
std::shared_ptr<const ImageDataset> indexed_dataset(int64_t count) {
  auto d = std::make_shared<ImageDataset>(make_synthetic(count, 2, 5, 6, 1, 11));
  d->name = "indexed";
  d->num_classes = count;
  for (int64_t i = 0; i < count; ++i)
    d->labels[static_cast<std::size_t>(i)] = static_cast<int32_t>(i);
  return d;
}

AugmentConfig full_augment() {
  AugmentConfig a;
  a.crop_padding = 2;
  a.horizontal_flip = true;
  a.normalize = {{0.3f, 0.6f}, {0.25f, 0.5f}};
  return a;
}

LoaderConfig train_config(int64_t batch, int workers, uint64_t seed = 17) {
  LoaderConfig c = LoaderConfig::training(batch, seed, full_augment(), workers);
  c.prefetch = 3;
  return c;
}

std::vector<Batch> take(DataLoader& loader, int n) {
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) {
    std::optional<Batch> b = loader.next();
    if (!b) break;
    out.push_back(std::move(*b));
  }
  return out;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE("batch " + std::to_string(i));
    EXPECT_EQ(a[i].epoch, b[i].epoch);
    EXPECT_EQ(a[i].index_in_epoch, b[i].index_in_epoch);
    EXPECT_EQ(a[i].real_count, b[i].real_count);
    EXPECT_EQ(a[i].example_indices, b[i].example_indices);
    EXPECT_TRUE(same_bytes(a[i].images, b[i].images));
    EXPECT_TRUE(same_bytes(a[i].labels, b[i].labels));
    EXPECT_TRUE(same_bytes(a[i].weights, b[i].weights));
  }
}

TEST(Loader, TrainingEpochsCoverTheSubsetAndReshuffle) {
  const auto ds = indexed_dataset(103);
  DataLoader loader(ds, iota_indices(103), train_config(10, 0));
  EXPECT_EQ(loader.batches_per_epoch(), 10);  // drop_last: 3 examples left out each epoch
  std::vector<std::vector<int64_t>> epochs(3);
  for (int i = 0; i < 30; ++i) {
    const Batch b = *loader.next();
    EXPECT_EQ(b.epoch, i / 10);
    EXPECT_EQ(b.index_in_epoch, i % 10);
    EXPECT_EQ(b.real_count, 10);
    EXPECT_EQ(b.images.shape(), (Shape{10, 2, 5, 6}));
    EXPECT_EQ(b.labels.dtype(), DType::I32);
    EXPECT_EQ(b.weights.to_vector<float>(), std::vector<float>(10, 1.0f));
    const std::vector<int32_t> labels = b.labels.to_vector<int32_t>();
    for (std::size_t r = 0; r < labels.size(); ++r) EXPECT_EQ(labels[r], b.example_indices[r]);
    auto& e = epochs[static_cast<std::size_t>(b.epoch)];
    e.insert(e.end(), b.example_indices.begin(), b.example_indices.end());
  }
  for (const auto& e : epochs) {
    EXPECT_EQ(std::set<int64_t>(e.begin(), e.end()).size(), 100u);  // no repeats in an epoch
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
  // The order is the epoch's permutation of the subset: a function of (seed, epoch) only.
  const std::vector<int64_t> perm = random_permutation(103, 17, DataStream::kShuffle, 1);
  EXPECT_EQ(epochs[1], std::vector<int64_t>(perm.begin(), perm.begin() + 100));
  EXPECT_EQ(loader.state(), (LoaderState{3, 0}));
}

TEST(Loader, EpochOrderDependsOnlyOnSeedAndEpoch) {
  const auto ds = indexed_dataset(60);
  DataLoader by10(ds, iota_indices(60), train_config(10, 2));
  DataLoader by4(ds, iota_indices(60), train_config(4, 0));
  std::vector<int64_t> a, b;
  for (const Batch& x : take(by10, 12))
    a.insert(a.end(), x.example_indices.begin(), x.example_indices.end());
  for (const Batch& x : take(by4, 30))
    b.insert(b.end(), x.example_indices.begin(), x.example_indices.end());
  EXPECT_EQ(a, b);
  DataLoader other_seed(ds, iota_indices(60), train_config(10, 0, 18));
  std::vector<int64_t> c;
  for (const Batch& x : take(other_seed, 6))
    c.insert(c.end(), x.example_indices.begin(), x.example_indices.end());
  EXPECT_NE(std::vector<int64_t>(a.begin(), a.begin() + 60), c);
}

TEST(Loader, BatchImagesAreTheAugmentedExamples) {
  const auto ds = indexed_dataset(40);
  const std::vector<int64_t> subset = {3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37};
  DataLoader loader(ds, subset, train_config(4, 1));
  const Augmenter augmenter(full_augment(), 2, 5, 6);
  std::vector<float> expected(60);
  for (const Batch& b : take(loader, 7)) {
    const float* images = b.images.data<float>();
    for (int64_t r = 0; r < 4; ++r) {
      const int64_t idx = b.example_indices[static_cast<std::size_t>(r)];
      EXPECT_TRUE(std::find(subset.begin(), subset.end(), idx) != subset.end());
      augmenter.apply(ds->image(idx), augmenter.draw(17, b.epoch, idx), expected.data());
      EXPECT_EQ(std::memcmp(images + r * 60, expected.data(), 60 * sizeof(float)), 0)
          << "row " << r << " example " << idx;
    }
  }
}

TEST(Loader, IdenticalBatchesForZeroOneAndThreeWorkers) {
  const auto ds = indexed_dataset(77);
  const std::vector<int64_t> subset = carve_validation(77, 7, 1).train;
  DataLoader w0(ds, subset, train_config(8, 0));
  DataLoader w1(ds, subset, train_config(8, 1));
  DataLoader w3(ds, subset, train_config(8, 3));
  const std::vector<Batch> a = take(w0, 30);  // 8 batches an epoch: crosses 3 epochs
  expect_same_batches(a, take(w1, 30));
  expect_same_batches(a, take(w3, 30));
  LoaderConfig eval = LoaderConfig::evaluation(8, full_augment(), 3);
  DataLoader e3(ds, subset, eval);
  eval.workers = 0;
  DataLoader e0(ds, subset, eval);
  expect_same_batches(take(e0, 100), take(e3, 100));
}

TEST(Loader, EvaluationPadsTheLastBatchWithWeightZero) {
  const auto ds = indexed_dataset(50);
  const SplitIndices split = carve_validation(50, 23, 4);
  for (const int workers : {0, 2}) {
    DataLoader loader(ds, split.validation, LoaderConfig::evaluation(10, full_augment(), workers));
    EXPECT_FALSE(loader.config().augment.horizontal_flip);
    EXPECT_EQ(loader.batches_per_epoch(), 3);
    const std::vector<Batch> batches = take(loader, 100);
    ASSERT_EQ(batches.size(), 3u);
    EXPECT_FALSE(loader.next().has_value());
    EXPECT_FALSE(loader.next().has_value());
    std::vector<int64_t> seen;
    double weight_sum = 0;
    for (const Batch& b : batches) {
      EXPECT_EQ(b.images.dim(0), 10);
      for (const float w : b.weights.to_vector<float>()) weight_sum += w;
      seen.insert(seen.end(), b.example_indices.begin(), b.example_indices.begin() + b.real_count);
    }
    EXPECT_EQ(seen, split.validation);  // in order, each once
    EXPECT_EQ(weight_sum, 23.0);
    const Batch& last = batches.back();
    EXPECT_EQ(last.real_count, 3);
    EXPECT_EQ(last.weights.to_vector<float>(), (std::vector<float>{1, 1, 1, 0, 0, 0, 0, 0, 0, 0}));
    const std::vector<int32_t> labels = last.labels.to_vector<int32_t>();
    const float* images = last.images.data<float>();
    for (int64_t r = 3; r < 10; ++r) {
      EXPECT_EQ(labels[static_cast<std::size_t>(r)], labels[0]);  // a real example's copy
      EXPECT_EQ(std::memcmp(images + r * 60, images, 60 * sizeof(float)), 0);
    }
    // seek({0, 0}) runs the pass again, identically.
    loader.seek({0, 0});
    expect_same_batches(batches, take(loader, 100));
  }
}

TEST(Loader, ShortLastBatchWithoutPadding) {
  const auto ds = indexed_dataset(23);
  LoaderConfig c = LoaderConfig::evaluation(10, {}, 1);
  c.pad_last = false;
  DataLoader loader(ds, iota_indices(23), c);
  const std::vector<Batch> batches = take(loader, 10);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[2].images.shape(), (Shape{3, 2, 5, 6}));
  EXPECT_EQ(batches[2].real_count, 3);
  EXPECT_EQ(batches[2].weights.to_vector<float>(), (std::vector<float>{1, 1, 1}));
}

TEST(Loader, EmptyEvaluationSubset) {
  DataLoader loader(indexed_dataset(5), {}, LoaderConfig::evaluation(4, {}, 2));
  EXPECT_EQ(loader.batches_per_epoch(), 0);
  EXPECT_FALSE(loader.next().has_value());
  EXPECT_EQ(loader.state(), (LoaderState{0, 0}));
}

TEST(Loader, ResumeThroughStateAndSeek) {
  const auto ds = indexed_dataset(64);
  for (const int workers : {0, 2}) {
    SCOPED_TRACE("workers " + std::to_string(workers));
    DataLoader uninterrupted(ds, iota_indices(64), train_config(6, workers));  // 10 an epoch
    const std::vector<Batch> first = take(uninterrupted, 17);
    const LoaderState saved = uninterrupted.state();
    EXPECT_EQ(saved, (LoaderState{1, 7}));
    const std::vector<Batch> rest = take(uninterrupted, 15);

    DataLoader restored(ds, iota_indices(64), train_config(6, workers), saved);
    EXPECT_EQ(restored.state(), saved);
    expect_same_batches(rest, take(restored, 15));

    DataLoader sought(ds, iota_indices(64), train_config(6, 3 - workers));
    take(sought, 5);  // run ahead, then jump: prefetched batches are discarded
    sought.seek(saved);
    expect_same_batches(rest, take(sought, 15));
    sought.seek({0, 0});
    expect_same_batches(first, take(sought, 17));
  }
}

TEST(Loader, SeekOutOfRange) {
  const auto ds = indexed_dataset(30);
  DataLoader train(ds, iota_indices(30), train_config(10, 1));
  expect_error<ValueError>([&] { train.seek({-1, 0}); }, {"cannot seek to epoch -1"});
  expect_error<ValueError>([&] { train.seek({0, 4}); }, {"epoch 0 batch 4", "3 batches"});
  train.seek({5, 3});  // the end of epoch 5 is the start of epoch 6
  EXPECT_EQ(train.state(), (LoaderState{6, 0}));
  DataLoader eval(ds, iota_indices(30), LoaderConfig::evaluation(10, {}, 1));
  expect_error<ValueError>([&] { eval.seek({1, 1}); }, {"one-pass loader"});
  eval.seek({1, 0});
  EXPECT_FALSE(eval.next().has_value());
}

TEST(Loader, DestroyedMidStreamWithoutHanging) {
  const auto ds = indexed_dataset(500);
  for (int round = 0; round < 20; ++round) {
    LoaderConfig c = train_config(16, 1 + round % 4);
    c.prefetch = 1 + round % 3;
    DataLoader loader(ds, iota_indices(500), c);
    take(loader, round % 5);  // 0..4 batches, then destroyed with workers blocked or busy
  }
  // A finished one-pass loader whose workers idle at the end.
  DataLoader eval(ds, iota_indices(500), LoaderConfig::evaluation(64, {}, 3));
  EXPECT_EQ(take(eval, 100).size(), 8u);
}

TEST(Loader, WaitSecondsIsMeasured) {
  const auto ds = indexed_dataset(100);
  DataLoader sync(ds, iota_indices(100), train_config(50, 0));
  const Batch b = *sync.next();
  EXPECT_GT(b.wait_seconds, 0.0);  // built on the calling thread
  DataLoader async(ds, iota_indices(100), train_config(50, 2));
  for (const Batch& x : take(async, 4)) {
    EXPECT_GE(x.wait_seconds, 0.0);
    EXPECT_LT(x.wait_seconds, 60.0);
  }
}

TEST(LoaderErrors, BadConfigurations) {
  const auto ds = indexed_dataset(10);
  expect_error<ValueError>([&] { DataLoader(nullptr, {}, train_config(4, 0)); },
                           {"dataset is null"});
  expect_error<ValueError>([&] { DataLoader(ds, iota_indices(10), train_config(0, 0)); },
                           {"batch_size must be >= 1"});
  LoaderConfig both = train_config(4, 0);
  both.pad_last = true;
  expect_error<ValueError>([&] { DataLoader(ds, iota_indices(10), both); },
                           {"drop_last and pad_last are exclusive"});
  expect_error<ValueError>(
      [&] {
        DataLoader(ds, {1, 10}, train_config(1, 0));
      },
      {"index 10 (position 1 of the subset)", "10 examples"});
  expect_error<ValueError>(
      [&] {
        DataLoader(ds, {1, 2, 3}, train_config(4, 0));
      },
      {"an epoch of 3 examples has no batch of 4 with drop_last"});
  LoaderConfig negative = train_config(4, -1);
  expect_error<ValueError>([&] { DataLoader(ds, iota_indices(10), negative); }, {"workers"});
  LoaderConfig wrong_stats = train_config(4, 0);
  wrong_stats.augment.normalize = dataset_stats("cifar10");
  expect_error<ValueError>([&] { DataLoader(ds, iota_indices(10), wrong_stats); },
                           {"3 mean values for 2-channel images"});
}

}  // namespace
}  // namespace pb::data
