// CUDA losses and metrics against the CPU kernels (kernels/cpu/loss.cpp, metrics.cpp): softmax
// cross-entropy (smoothing, weights with zeros, warp- and block-per-row K, large logits),
// invalid labels (NaN loss, no host check), MSE, top-k error counts. Outputs are poisoned with
// NaN before each launch; the loss and dloss scalars live in device memory.
//
// Tolerances (|cuda - cpu| <= atol + rtol |cpu|):
//   probs: rtol 1e-5, atol 1e-12. CUDA: expf(z - max) in float (2 ulp) times 1/sum, the argument
//     z - max rounded in float (relative error |z - max| * 6e-8, <= 4e-6 for the +-30 logits);
//     CPU: all in double.
//   loss: rtol 2e-6, atol 1e-6. The sum of exps adds float terms (each ~2 ulp), so log(sum) is
//     off by ~1e-7 absolute; the rest is double.
//   dlogits: rtol 1e-6, atol 1e-12, from the same (CPU) probs: only sum w differs in summation
//     order; one rounding to float.
//   MSE loss: rtol 1e-6 (double sums, order only); MSE gradients: bitwise (same double ops).
//   top-k counts: exact (weights are multiples of 1/4; sums exact in double and float).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/loss.h"
#include "kernels/metrics.h"
#include "kernels/reduce.h"

namespace pb::kernels {
namespace {

#define PB_SKIP_WITHOUT_CUDA_DEVICE()                                          \
  do {                                                                         \
    int device_count = 0;                                                      \
    if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) \
      GTEST_SKIP() << "no CUDA device";                                        \
  } while (0)

// A device array of n elements of T, freed on scope exit.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(int64_t n) : n_(n) { PB_CUDA_CHECK(cudaMalloc(&ptr_, bytes())); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr_); }

  T* get() { return ptr_; }
  void upload(const std::vector<T>& host) {
    ASSERT_EQ(static_cast<int64_t>(host.size()), n_);
    PB_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  void poison() { PB_CUDA_CHECK(cudaMemset(ptr_, 0xFF, bytes())); }  // NaN floats
  std::vector<T> download() {
    PB_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> host(static_cast<size_t>(n_));
    PB_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  T item() { return download().at(0); }

 private:
  size_t bytes() const { return static_cast<size_t>(n_ > 0 ? n_ : 1) * sizeof(T); }
  int64_t n_;
  T* ptr_ = nullptr;
};

// Workspace for the reductions (kernels/reduce.h).
class Workspace {
 public:
  Workspace() { PB_CUDA_CHECK(cudaMalloc(&ptr_, reduce_cuda_workspace_bytes())); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() { cudaFree(ptr_); }
  void* get() { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

std::vector<float> random_floats(int64_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = dist(rng);
  return v;
}

std::vector<int32_t> random_labels(int64_t n, int64_t K, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> dist(0, K - 1);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& e : v) e = static_cast<int32_t>(dist(rng));
  return v;
}

// Weights in {0, 0.25, 1, 2.5}: about a quarter of the examples removed.
std::vector<float> random_weights(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> pick(0, 3);
  const float levels[] = {0.0f, 0.25f, 1.0f, 2.5f};
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = levels[pick(rng)];
  return v;
}

void expect_close(const std::vector<float>& gpu, const std::vector<float>& cpu, double atol,
                  double rtol, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int64_t mismatches = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const double diff = std::abs(static_cast<double>(gpu[i]) - static_cast<double>(cpu[i]));
    if (!(diff <= atol + rtol * std::abs(static_cast<double>(cpu[i]))) && ++mismatches <= 5) {
      ADD_FAILURE() << what << " i=" << i << ": cuda " << gpu[i] << " vs cpu " << cpu[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << what;
}

void expect_bitwise_equal(const std::vector<float>& gpu, const std::vector<float>& cpu,
                          const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  int64_t mismatches = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    if (std::memcmp(&gpu[i], &cpu[i], sizeof(float)) != 0 && ++mismatches <= 5) {
      ADD_FAILURE() << what << " i=" << i << ": cuda " << gpu[i] << " vs cpu " << cpu[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << what;
}

struct CeCase {
  int64_t N, K;
  float smoothing;
  bool weighted;
  float logit_range;  // logits uniform in [-range, range]
};

TEST(CrossEntropyCuda, MatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const std::vector<CeCase> cases = {
      {1, 1, 0.0f, false, 4.0f},       {7, 3, 0.1f, true, 4.0f},     {1000, 1000, 0.1f, true, 4.0f},
      {513, 1000, 0.0f, false, 30.0f}, {33, 2049, 0.2f, true, 4.0f}, {5, 7000, 0.1f, false, 30.0f},
      {20000, 10, 0.1f, true, 4.0f},  // more rows than the partial count allows: grid stride
  };
  Workspace ws;
  for (const CeCase& k : cases) {
    const std::string what = "N=" + std::to_string(k.N) + " K=" + std::to_string(k.K) +
                             " s=" + std::to_string(k.smoothing) + (k.weighted ? " weighted" : "");
    const int64_t nk = k.N * k.K;
    const std::vector<float> logits = random_floats(nk, 1, -k.logit_range, k.logit_range);
    const std::vector<int32_t> labels = random_labels(k.N, k.K, 2);
    const std::vector<float> weights = random_weights(k.N, 3);
    const float* w_cpu = k.weighted ? weights.data() : nullptr;
    const float dloss = 1.7f;
    std::vector<float> probs(nk), dlogits(nk);
    float loss = 0.0f;
    softmax_cross_entropy_forward_cpu<float>(k.N, k.K, logits.data(), labels.data(), w_cpu,
                                             k.smoothing, &loss, probs.data());
    softmax_cross_entropy_backward_cpu<float>(k.N, k.K, probs.data(), labels.data(), w_cpu,
                                              k.smoothing, &dloss, dlogits.data());

    DeviceArray<float> d_logits(nk), d_probs(nk), d_dlogits(nk), d_weights(k.N), d_loss(1),
        d_dloss(1);
    DeviceArray<int32_t> d_labels(k.N);
    d_logits.upload(logits);
    d_labels.upload(labels);
    d_weights.upload(weights);
    d_dloss.upload({dloss});
    float* w_gpu = k.weighted ? d_weights.get() : nullptr;
    d_probs.poison();
    d_loss.poison();
    softmax_cross_entropy_forward_cuda(nullptr, k.N, k.K, d_logits.get(), d_labels.get(), w_gpu,
                                       k.smoothing, d_loss.get(), d_probs.get(), ws.get());
    expect_close(d_probs.download(), probs, 1e-12, 1e-5, what + " probs");
    expect_close({d_loss.item()}, {loss}, 1e-6, 2e-6, what + " loss");

    d_probs.upload(probs);  // the backward from the CPU's probs
    d_dlogits.poison();
    softmax_cross_entropy_backward_cuda(nullptr, k.N, k.K, d_probs.get(), d_labels.get(), w_gpu,
                                        k.smoothing, d_dloss.get(), d_dlogits.get(), ws.get());
    expect_close(d_dlogits.download(), dlogits, 1e-12, 1e-6, what + " dlogits");
  }
}

// A label outside [0, K) on an example with a non-zero weight makes the loss NaN (no host
// check); on a zero-weight example it is ignored, exactly as on the CPU.
TEST(CrossEntropyCuda, InvalidLabelsGiveNaN) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t N = 300, K = 17;
  const std::vector<float> logits = random_floats(N * K, 4, -3.0f, 3.0f);
  std::vector<int32_t> labels = random_labels(N, K, 5);
  std::vector<float> weights(N, 1.0f);
  Workspace ws;
  DeviceArray<float> d_logits(N * K), d_probs(N * K), d_weights(N), d_loss(1);
  DeviceArray<int32_t> d_labels(N);
  d_logits.upload(logits);

  // Invalid labels on zero-weight rows only: finite, and equal to the CPU's value.
  labels[10] = -1;
  labels[200] = static_cast<int32_t>(K);
  weights[10] = 0.0f;
  weights[200] = 0.0f;
  std::vector<float> probs(N * K);
  float loss = 0.0f;
  softmax_cross_entropy_forward_cpu<float>(N, K, logits.data(), labels.data(), weights.data(), 0.1f,
                                           &loss, probs.data());
  d_labels.upload(labels);
  d_weights.upload(weights);
  d_loss.poison();
  softmax_cross_entropy_forward_cuda(nullptr, N, K, d_logits.get(), d_labels.get(), d_weights.get(),
                                     0.1f, d_loss.get(), d_probs.get(), ws.get());
  const float ok = d_loss.item();
  EXPECT_TRUE(std::isfinite(ok));
  EXPECT_NEAR(ok, loss, 1e-6 + 2e-6 * std::abs(loss));

  // One invalid label on a weighted row, high or negative: NaN.
  for (const int32_t bad : {static_cast<int32_t>(K), -1, 1 << 30}) {
    labels[123] = bad;
    d_labels.upload(labels);
    d_loss.upload({0.0f});
    softmax_cross_entropy_forward_cuda(nullptr, N, K, d_logits.get(), d_labels.get(), nullptr, 0.0f,
                                       d_loss.get(), d_probs.get(), ws.get());
    EXPECT_TRUE(std::isnan(d_loss.item())) << "label " << bad;
  }
}

// All weights zero: loss 0 and zero gradients; N == 0: loss 0, nothing launched.
TEST(CrossEntropyCuda, ZeroWeightsAndEmptyBatch) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t N = 50, K = 9;
  Workspace ws;
  DeviceArray<float> d_logits(N * K), d_probs(N * K), d_dlogits(N * K), d_weights(N), d_loss(1),
      d_dloss(1);
  DeviceArray<int32_t> d_labels(N);
  d_logits.upload(random_floats(N * K, 6, -2.0f, 2.0f));
  d_labels.upload(random_labels(N, K, 7));
  d_weights.upload(std::vector<float>(N, 0.0f));
  d_dloss.upload({1.0f});
  d_loss.poison();
  softmax_cross_entropy_forward_cuda(nullptr, N, K, d_logits.get(), d_labels.get(), d_weights.get(),
                                     0.1f, d_loss.get(), d_probs.get(), ws.get());
  EXPECT_EQ(d_loss.item(), 0.0f);
  d_dlogits.poison();
  softmax_cross_entropy_backward_cuda(nullptr, N, K, d_probs.get(), d_labels.get(), d_weights.get(),
                                      0.1f, d_dloss.get(), d_dlogits.get(), ws.get());
  EXPECT_EQ(d_dlogits.download(), std::vector<float>(N * K, 0.0f));

  d_loss.poison();
  softmax_cross_entropy_forward_cuda(nullptr, 0, K, nullptr, nullptr, nullptr, 0.1f, d_loss.get(),
                                     nullptr, ws.get());
  EXPECT_EQ(d_loss.item(), 0.0f);
  softmax_cross_entropy_backward_cuda(nullptr, 0, K, nullptr, nullptr, nullptr, 0.1f, nullptr,
                                      nullptr, ws.get());
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(MseCuda, MatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  Workspace ws;
  for (const int64_t n : {int64_t{1}, int64_t{1000}, int64_t{1000003}}) {
    const std::string what = "n=" + std::to_string(n);
    const std::vector<float> pred = random_floats(n, 8, -2.0f, 2.0f);
    const std::vector<float> target = random_floats(n, 9, -2.0f, 2.0f);
    const float dloss = 0.75f;
    float loss = 0.0f;
    std::vector<float> dpred(n), dtarget(n);
    mse_forward_cpu<float>(n, pred.data(), target.data(), &loss);
    mse_backward_cpu<float>(n, pred.data(), target.data(), &dloss, dpred.data(), dtarget.data());

    DeviceArray<float> d_pred(n), d_target(n), d_dpred(n), d_dtarget(n), d_loss(1), d_dloss(1);
    d_pred.upload(pred);
    d_target.upload(target);
    d_dloss.upload({dloss});
    d_loss.poison();
    d_dpred.poison();
    d_dtarget.poison();
    mse_forward_cuda(nullptr, n, d_pred.get(), d_target.get(), d_loss.get(), ws.get());
    mse_backward_cuda(nullptr, n, d_pred.get(), d_target.get(), d_dloss.get(), d_dpred.get(),
                      d_dtarget.get());
    expect_close({d_loss.item()}, {loss}, 0.0, 1e-6, what + " loss");
    expect_bitwise_equal(d_dpred.download(), dpred, what + " dpred");
    expect_bitwise_equal(d_dtarget.download(), dtarget, what + " dtarget");

    d_dtarget.poison();
    mse_backward_cuda(nullptr, n, d_pred.get(), d_target.get(), d_dloss.get(), nullptr,
                      d_dtarget.get());  // dpred skipped
    expect_bitwise_equal(d_dtarget.download(), dtarget, what + " dtarget alone");
  }
  DeviceArray<float> d_loss(1);
  d_loss.poison();
  mse_forward_cuda(nullptr, 0, nullptr, nullptr, d_loss.get(), ws.get());
  EXPECT_EQ(d_loss.item(), 0.0f);
}

TEST(TopKErrorCuda, MatchesCpu) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  Workspace ws;
  struct Case {
    int64_t N, K, k;
    bool weighted;
  };
  for (const Case c : {Case{1, 1, 1, false}, Case{1000, 1000, 1, true}, Case{1000, 1000, 5, true},
                       Case{9000, 10, 3, false}, Case{37, 2500, 5, true}}) {
    const std::string what =
        "N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) + " k=" + std::to_string(c.k);
    // Logits on a coarse grid (ties with the label's logit) and a few NaN label logits.
    std::vector<float> logits = random_floats(c.N * c.K, 10, 0.0f, 10.0f);
    for (float& z : logits) z = std::floor(z);
    const std::vector<int32_t> labels = random_labels(c.N, c.K, 11);
    for (int64_t i = 0; i < c.N; i += 97) logits[i * c.K + labels[i]] = std::nanf("");
    const std::vector<float> weights = random_weights(c.N, 12);
    const float* w_cpu = c.weighted ? weights.data() : nullptr;
    float errors = 0.0f, total = 0.0f;
    topk_error_count_cpu<float>(c.N, c.K, c.k, logits.data(), labels.data(), w_cpu, &errors,
                                &total);

    DeviceArray<float> d_logits(c.N * c.K), d_weights(c.N), d_errors(1), d_total(1);
    DeviceArray<int32_t> d_labels(c.N);
    d_logits.upload(logits);
    d_labels.upload(labels);
    d_weights.upload(weights);
    d_errors.poison();
    d_total.poison();
    topk_error_count_cuda(nullptr, c.N, c.K, c.k, d_logits.get(), d_labels.get(),
                          c.weighted ? d_weights.get() : nullptr, d_errors.get(), d_total.get(),
                          ws.get());
    EXPECT_EQ(d_errors.item(), errors) << what;
    EXPECT_EQ(d_total.item(), total) << what;
  }
}

// An out-of-range label with a non-zero weight counts as an error (never read out of bounds).
TEST(TopKErrorCuda, InvalidLabelCountsAsError) {
  PB_SKIP_WITHOUT_CUDA_DEVICE();
  const int64_t N = 40, K = 6;
  const std::vector<float> logits = random_floats(N * K, 13, -1.0f, 1.0f);
  std::vector<int32_t> labels = random_labels(N, K, 14);
  std::vector<float> weights(N, 1.0f);
  weights[7] = 0.0f;  // the CPU reference without the bad row
  float errors = 0.0f, total = 0.0f;
  topk_error_count_cpu<float>(N, K, 1, logits.data(), labels.data(), weights.data(), &errors,
                              &total);
  labels[7] = static_cast<int32_t>(K + 3);
  weights[7] = 2.0f;
  Workspace ws;
  DeviceArray<float> d_logits(N * K), d_weights(N), d_errors(1), d_total(1);
  DeviceArray<int32_t> d_labels(N);
  d_logits.upload(logits);
  d_labels.upload(labels);
  d_weights.upload(weights);
  topk_error_count_cuda(nullptr, N, K, 1, d_logits.get(), d_labels.get(), d_weights.get(),
                        d_errors.get(), d_total.get(), ws.get());
  EXPECT_EQ(d_errors.item(), errors + 2.0f);
  EXPECT_EQ(d_total.item(), total + 2.0f);
}

}  // namespace
}  // namespace pb::kernels
