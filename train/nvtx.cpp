#include "train/nvtx.h"

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <vector>

#ifdef PB_WITH_NVTX
#include <nvtx3/nvToolsExt.h>
#endif

namespace pb::train {
namespace {

std::atomic<bool> g_enabled{false};
thread_local std::vector<OpenRange> t_open;

#ifdef PB_WITH_NVTX
nvtxDomainHandle_t domain() {
  static const nvtxDomainHandle_t d = nvtxDomainCreateA("playbook");
  return d;
}

// Registered once per name: the profiler then stores a handle per event, not the text.
nvtxStringHandle_t registered(const char* name) {
  static std::mutex mutex;
  static std::unordered_map<const char*, nvtxStringHandle_t> handles;
  const std::lock_guard<std::mutex> lock(mutex);
  auto [it, inserted] = handles.try_emplace(name, nullptr);
  if (inserted) it->second = nvtxDomainRegisterStringA(domain(), name);
  return it->second;
}
#endif

}  // namespace

bool nvtx_built_in() {
#ifdef PB_WITH_NVTX
  return true;
#else
  return false;
#endif
}

void set_nvtx_enabled(bool on) {
  g_enabled.store(on && nvtx_built_in());
}
bool nvtx_enabled() {
  return g_enabled.load();
}

OpenRange innermost_range() {
  return t_open.empty() ? OpenRange{} : t_open.back();
}
OpenRange outermost_range() {
  return t_open.empty() ? OpenRange{} : t_open.front();
}

NvtxRange::NvtxRange(const char* name, int64_t step) {
  t_open.push_back({name, step});
#ifdef PB_WITH_NVTX
  if (!g_enabled.load(std::memory_order_relaxed)) return;
  nvtxEventAttributes_t a{};
  a.version = NVTX_VERSION;
  a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  a.messageType = NVTX_MESSAGE_TYPE_REGISTERED;
  a.message.registered = registered(name);
  a.payloadType = NVTX_PAYLOAD_TYPE_INT64;
  a.payload.llValue = step;
  nvtxDomainRangePushEx(domain(), &a);
  pushed_ = true;
#endif
}

NvtxRange::~NvtxRange() {
#ifdef PB_WITH_NVTX
  if (pushed_) nvtxDomainRangePop(domain());
#endif
  t_open.pop_back();
}

}  // namespace pb::train
