// DataLoader. Workers and the consumer share one mutex: a worker takes it only to claim a batch
// number (and, once per epoch, to compute that epoch's order) and to file the finished batch in
// its reorder slot; the batch itself is built outside the lock into tensors from the buffer pool.

#include "runtime/data/loader.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <utility>

#include "runtime/core/error.h"

namespace pb::data {
namespace {

// The augmenter for the dataset's image shape; throws for a null dataset first.
Augmenter make_augmenter(const AugmentConfig& config,
                         const std::shared_ptr<const ImageDataset>& dataset) {
  if (!dataset) fail("DataLoader: dataset is null");
  return Augmenter(config, dataset->channels, dataset->height, dataset->width);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

LoaderConfig LoaderConfig::training(int64_t batch_size, uint64_t seed, AugmentConfig augment,
                                    int workers) {
  LoaderConfig config;
  config.batch_size = batch_size;
  config.shuffle = true;
  config.drop_last = true;
  config.pad_last = false;
  config.repeat = true;
  config.workers = workers;
  config.seed = seed;
  config.augment = std::move(augment);
  return config;
}

LoaderConfig LoaderConfig::evaluation(int64_t batch_size, AugmentConfig augment, int workers) {
  LoaderConfig config;
  config.batch_size = batch_size;
  config.shuffle = false;
  config.drop_last = false;
  config.pad_last = true;
  config.repeat = false;
  config.workers = workers;
  config.augment = std::move(augment);
  config.augment.crop_padding = 0;
  config.augment.horizontal_flip = false;
  return config;
}

DataLoader::DataLoader(std::shared_ptr<const ImageDataset> dataset, std::vector<int64_t> indices,
                       LoaderConfig config, LoaderState start)
    : dataset_(std::move(dataset)),
      indices_(std::move(indices)),
      config_(std::move(config)),
      augmenter_(make_augmenter(config_.augment, dataset_)),
      pool_(device::HostBufferPool::create(config_.pin_memory)) {
  if (config_.batch_size < 1)
    fail("DataLoader: batch_size must be >= 1, got {}", config_.batch_size);
  if (config_.workers < 0 || config_.workers > 256) {
    fail("DataLoader: workers must be in [0, 256], got {}", config_.workers);
  }
  if (config_.prefetch < 0) fail("DataLoader: prefetch must be >= 0, got {}", config_.prefetch);
  if (config_.drop_last && config_.pad_last) {
    fail("DataLoader: drop_last and pad_last are exclusive (drop or pad the last partial batch)");
  }
  if (static_cast<int64_t>(dataset_->pixels.size()) != dataset_->count * dataset_->example_size() ||
      static_cast<int64_t>(dataset_->labels.size()) != dataset_->count) {
    fail(
        "DataLoader: dataset \"{}\" holds {} pixel bytes and {} labels for {} examples of ({}, "
        "{}, {})",
        dataset_->name, dataset_->pixels.size(), dataset_->labels.size(), dataset_->count,
        dataset_->channels, dataset_->height, dataset_->width);
  }
  for (std::size_t i = 0; i < indices_.size(); ++i) {
    if (indices_[i] < 0 || indices_[i] >= dataset_->count) {
      fail(
          "DataLoader: index {} (position {} of the subset) is out of range for dataset \"{}\" "
          "of {} examples",
          indices_[i], i, dataset_->name, dataset_->count);
    }
  }
  const auto n = static_cast<int64_t>(indices_.size());
  const int64_t b = config_.batch_size;
  batches_per_epoch_ = config_.drop_last ? n / b : (n + b - 1) / b;
  if (config_.repeat && batches_per_epoch_ == 0) {
    fail("DataLoader: an epoch of {} examples has no batch of {}{}: nothing to repeat", n, b,
         config_.drop_last ? " with drop_last" : "");
  }
  if (!config_.shuffle) in_order_ = std::make_shared<const std::vector<int64_t>>(indices_);

  window_ = std::max({config_.prefetch, config_.workers, 1});
  seek(start);
  if (config_.workers > 0) {
    slots_.resize(static_cast<std::size_t>(window_));
    workers_.reserve(static_cast<std::size_t>(config_.workers));
    try {
      for (int w = 0; w < config_.workers; ++w) workers_.emplace_back([this] { worker_loop(); });
    } catch (...) {
      {
        const std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
      }
      work_cv_.notify_all();
      for (std::thread& t : workers_) t.join();
      throw;
    }
  }
}

DataLoader::~DataLoader() {
  {
    const std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

bool DataLoader::finished(int64_t global) const {
  return !config_.repeat && global >= batches_per_epoch_;
}

LoaderState DataLoader::state() const {
  const std::lock_guard<std::mutex> lock(mu_);
  if (batches_per_epoch_ == 0) return {0, 0};
  return {delivered_ / batches_per_epoch_, delivered_ % batches_per_epoch_};
}

void DataLoader::seek(LoaderState state) {
  const int64_t bpe = batches_per_epoch_;
  if (state.epoch < 0 || state.next_batch < 0 || state.next_batch > bpe) {
    fail("DataLoader: cannot seek to epoch {} batch {}: epochs have {} batches", state.epoch,
         state.next_batch, bpe);
  }
  const int64_t global = state.epoch * bpe + state.next_batch;
  if (!config_.repeat && global > bpe) {
    fail(
        "DataLoader: cannot seek to epoch {} batch {}: a one-pass loader has one epoch of {} "
        "batches",
        state.epoch, state.next_batch, bpe);
  }
  {
    const std::lock_guard<std::mutex> lock(mu_);
    ++generation_;
    delivered_ = global;
    next_ticket_ = global;
    for (Slot& slot : slots_) slot = Slot{};
  }
  work_cv_.notify_all();
}

DataLoader::Ticket DataLoader::make_ticket(int64_t global) {
  Ticket t;
  t.global = global;
  t.epoch = global / batches_per_epoch_;
  t.index = global % batches_per_epoch_;
  t.generation = generation_;
  if (t.epoch != order_epoch_) {
    if (config_.shuffle) {
      const std::vector<int64_t> perm = random_permutation(
          size(), config_.seed, DataStream::kShuffle, static_cast<uint32_t>(t.epoch));
      auto order = std::make_shared<std::vector<int64_t>>(perm.size());
      for (std::size_t p = 0; p < perm.size(); ++p) {
        (*order)[p] = indices_[static_cast<std::size_t>(perm[p])];
      }
      order_ = std::move(order);
    } else {
      order_ = in_order_;
    }
    order_epoch_ = t.epoch;
  }
  t.order = order_;
  return t;
}

// images (rows,C,H,W): row r < real is example order[k*B + r] augmented with its own draws; rows
// past `real` (pad_last) copy row 0 with weight 0.
Batch DataLoader::build(const Ticket& ticket) const {
  const ImageDataset& ds = *dataset_;
  const std::vector<int64_t>& order = *ticket.order;
  const int64_t b = config_.batch_size;
  const int64_t first = ticket.index * b;
  const int64_t real = std::min(b, static_cast<int64_t>(order.size()) - first);
  const int64_t rows = config_.pad_last ? b : real;
  const int64_t example = ds.example_size();

  Batch batch;
  batch.images = pool_->tensor(Shape{rows, ds.channels, ds.height, ds.width}, DType::F32);
  batch.labels = pool_->tensor(Shape{rows}, DType::I32);
  batch.weights = pool_->tensor(Shape{rows}, DType::F32);
  batch.real_count = real;
  batch.epoch = ticket.epoch;
  batch.index_in_epoch = ticket.index;
  batch.example_indices.resize(static_cast<std::size_t>(rows));

  float* images = batch.images.data<float>();      // (rows, C*H*W)
  int32_t* labels = batch.labels.data<int32_t>();  // (rows)
  float* weights = batch.weights.data<float>();    // (rows)
  for (int64_t r = 0; r < real; ++r) {
    const int64_t idx = order[static_cast<std::size_t>(first + r)];
    if (r + 1 < real) {
      // Shuffled examples are scattered over the dataset: fetch the next one's pixels while
      // this one is converted, instead of stalling on them.
      const uint8_t* next = ds.image(order[static_cast<std::size_t>(first + r + 1)]);
      for (int64_t line = 0; line < example; line += 64) __builtin_prefetch(next + line);
    }
    if (config_.example_delay_us > 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(config_.example_delay_us));
    }
    const AugmentDraw draw = augmenter_.draw(config_.seed, ticket.epoch, idx);
    augmenter_.apply(ds.image(idx), draw, images + r * example);
    labels[r] = ds.labels[static_cast<std::size_t>(idx)];
    weights[r] = 1.0f;
    batch.example_indices[static_cast<std::size_t>(r)] = idx;
  }
  for (int64_t r = real; r < rows; ++r) {
    std::memcpy(images + r * example, images, static_cast<std::size_t>(example) * sizeof(float));
    labels[r] = labels[0];
    weights[r] = 0.0f;
    batch.example_indices[static_cast<std::size_t>(r)] = batch.example_indices[0];
  }
  return batch;
}

void DataLoader::worker_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] {
      return stop_ || (next_ticket_ < delivered_ + window_ && !finished(next_ticket_));
    });
    if (stop_) return;
    const int64_t global = next_ticket_++;
    const uint64_t generation = generation_;
    Slot result;
    result.global = global;
    try {
      const Ticket ticket = make_ticket(global);
      lock.unlock();
      result.batch = build(ticket);
      lock.lock();
    } catch (...) {
      if (!lock.owns_lock()) lock.lock();
      result.error = std::current_exception();
    }
    if (generation != generation_) continue;  // a seek discarded this batch
    result.ready = true;
    slots_[static_cast<std::size_t>(global % window_)] = std::move(result);
    ready_cv_.notify_all();
  }
}

std::optional<Batch> DataLoader::next() {
  const auto start = std::chrono::steady_clock::now();
  if (workers_.empty()) {
    if (finished(delivered_)) return std::nullopt;
    Batch batch = build(make_ticket(delivered_));
    ++delivered_;
    batch.wait_seconds = seconds_since(start);
    return batch;
  }
  Slot taken;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (finished(delivered_)) return std::nullopt;
    Slot& slot = slots_[static_cast<std::size_t>(delivered_ % window_)];
    ready_cv_.wait(lock, [&] { return slot.ready && slot.global == delivered_; });
    taken = std::move(slot);
    slot = Slot{};
    ++delivered_;
  }
  const double waited = seconds_since(start);
  work_cv_.notify_all();  // the window moved on: one more batch may be claimed
  if (taken.error) std::rethrow_exception(taken.error);
  taken.batch.wait_seconds = waited;
  return std::move(taken.batch);
}

}  // namespace pb::data
