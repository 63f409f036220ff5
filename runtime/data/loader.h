#pragma once
// DataLoader: batches of a subset of an ImageDataset (a list of example indices), augmented,
// normalised and collated into CPU tensors, built ahead of time by worker threads.
//
// Two uses:
//   training   repeat = true, shuffle, drop_last: an endless stream; epoch e visits the subset in
//              the order random_permutation(n, seed, kShuffle, e), a function of (seed, e) only.
//   evaluation repeat = false, no shuffle, pad_last: one pass in subset order; the last partial
//              batch is padded to batch_size with copies of its first example, weight 0, so
//              metrics weighted per example are exact. next() then returns nullopt.
//
// Determinism: batch k of epoch e is a pure function of (dataset, indices, config, e, k): its
// examples are positions [k*B, (k+1)*B) of epoch e's order and each example's augmentation is
// drawn from (seed, e, dataset index) (augment.h). Workers claim batch numbers from a shared
// counter, build whole batches independently, and leave them in a reorder buffer; next() hands
// them out strictly in order. So 0, 1 or N workers give bitwise-identical batches, and a loader
// restored with seek(state()) continues exactly as an uninterrupted one.
//
// Buffers: batches are collated into tensors from a HostBufferPool (runtime/device/pinned.h),
// pinned when pin_memory is set (batches bound for a CUDA device), plain host memory otherwise.
// A batch's buffers return to the pool when its last tensor goes away (after the asynchronous
// copy that reads them, when one was recorded), so a run reuses about prefetch + 2 of them.
//
// Flow control: at most `prefetch` batches (ready or being built) exist ahead of the consumer;
// a worker waits until the consumer takes a batch before it claims one further ahead. The
// destructor stops and joins the workers, also mid-epoch, and frees the unconsumed batches.

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "runtime/core/tensor.h"
#include "runtime/data/augment.h"
#include "runtime/data/dataset.h"
#include "runtime/device/pinned.h"

namespace pb::data {

struct LoaderConfig {
  int64_t batch_size = 128;
  bool shuffle = true;    // a fresh permutation every epoch; false = subset order
  bool drop_last = true;  // drop the last partial batch of each epoch
  bool pad_last = false;  // pad the last partial batch with weight-0 copies (exclusive with
                          // drop_last); with neither, the last batch is just smaller
  bool repeat = true;     // endless epochs; false = one pass, then next() returns nullopt
  int workers = 0;        // 0 = build each batch on the calling thread inside next()
  int prefetch = 4;       // batches built ahead of the consumer; raised to at least `workers`
  uint64_t seed = 0;      // the data seed: shuffles and augmentation
  AugmentConfig augment;  // normalisation always applies; use {} for plain v / 255
  // Simulated storage latency: each example's read sleeps this long (0: off). It makes a fast
  // in-memory dataset behave like slow storage, to study input-bound training (the batch-size
  // sweep's input-bound verdict is tested with it).
  int64_t example_delay_us = 0;
  // Collate into pinned host memory, for asynchronous copies to a CUDA device (needs CUDA).
  bool pin_memory = false;

  // Endless shuffled epochs with drop_last.
  static LoaderConfig training(int64_t batch_size, uint64_t seed, AugmentConfig augment,
                               int workers = 2);
  // One pass in order, last batch padded, no random augmentation (crop and flip are cleared).
  static LoaderConfig evaluation(int64_t batch_size, AugmentConfig augment, int workers = 2);
};

struct Batch {
  Tensor images;           // (B,C,H,W) float32, CPU
  Tensor labels;           // (B) int32, CPU
  Tensor weights;          // (B) float32, CPU: 1 for a real example, 0 for padding
  int64_t real_count = 0;  // examples with weight 1: the first real_count rows
  int64_t epoch = 0;
  int64_t index_in_epoch = 0;
  // How long next() waited for this batch: blocked on the workers, or (workers = 0) building it.
  double wait_seconds = 0.0;
  std::vector<int64_t> example_indices;  // (B) dataset index of each row, padding included
};

// The position of the next batch next() returns.
struct LoaderState {
  int64_t epoch = 0;
  int64_t next_batch = 0;
  bool operator==(const LoaderState&) const = default;
};

class DataLoader {
 public:
  // indices: the subset, each in [0, dataset->count). Throws ValueError for a bad index or
  // config, or when a repeating loader would have epochs without batches.
  DataLoader(std::shared_ptr<const ImageDataset> dataset, std::vector<int64_t> indices,
             LoaderConfig config, LoaderState start = {});
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch in order; nullopt after the last batch of a one-pass loader. Rethrows an
  // exception raised while building this batch.
  std::optional<Batch> next();

  LoaderState state() const;
  // Continues from `state` (e.g. a checkpoint's): discards batches built ahead. seek({0, 0})
  // restarts a one-pass loader. Throws ValueError for a position outside the stream.
  void seek(LoaderState state);

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  int64_t size() const { return static_cast<int64_t>(indices_.size()); }
  const LoaderConfig& config() const { return config_; }
  const ImageDataset& dataset() const { return *dataset_; }
  // The pool the batches' tensors come from (record copy events there; stats for tests).
  device::HostBufferPool& buffer_pool() const { return *pool_; }

 private:
  // One batch to build: its global number g = epoch * batches_per_epoch + k, and the order of
  // its epoch (dataset indices, shared between the batches of an epoch).
  struct Ticket {
    int64_t global = 0;
    int64_t epoch = 0;
    int64_t index = 0;
    std::shared_ptr<const std::vector<int64_t>> order;
    uint64_t generation = 0;
  };
  struct Slot {
    bool ready = false;
    int64_t global = -1;
    Batch batch;
    std::exception_ptr error;
  };

  // Whether global batch number `global` is past the end of a one-pass loader.
  bool finished(int64_t global) const;
  // Ticket for global batch g; computes (and caches) the epoch's order. Caller holds mu_ when
  // workers run.
  Ticket make_ticket(int64_t global);
  Batch build(const Ticket& ticket) const;
  void worker_loop();

  std::shared_ptr<const ImageDataset> dataset_;
  std::vector<int64_t> indices_;
  std::shared_ptr<const std::vector<int64_t>> in_order_;  // indices_, for shuffle = false
  LoaderConfig config_;
  Augmenter augmenter_;
  std::shared_ptr<device::HostBufferPool> pool_;
  int64_t batches_per_epoch_ = 0;
  int64_t window_ = 1;  // batches allowed ahead of the consumer

  // Guarded by mu_ (when workers run).
  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // a ticket may be claimable, or stop
  std::condition_variable ready_cv_;  // a slot became ready
  int64_t delivered_ = 0;             // global number of the next batch next() returns
  int64_t next_ticket_ = 0;           // global number of the next batch a worker claims
  uint64_t generation_ = 0;           // bumped by seek: tickets of older generations are dropped
  int64_t order_epoch_ = -1;
  std::shared_ptr<const std::vector<int64_t>> order_;
  std::vector<Slot> slots_;  // (window_) slot of global batch g: g % window_
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace pb::data
