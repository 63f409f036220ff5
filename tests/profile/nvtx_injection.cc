// A minimal NVTX injection library, the way Nsight Systems attaches: the NVTX3 header of the
// process under test dlopens the library named by NVTX_INJECTION64_PATH and calls its
// InitializeInjectionNvtx2, which fills the callback table of the domain API (core2). Every
// range push and pop is appended to the file named by PB_NVTX_RECORD, one line each:
//   push <domain> <name> <payload or -1> <thread>
//   pop <domain> <thread>
#include <nvtx3/nvToolsExt.h>
#include <pthread.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>

namespace {

std::mutex g_mutex;
std::FILE* g_out = nullptr;

unsigned long thread_id() {
  return static_cast<unsigned long>(pthread_self());
}

const char* domain_name(nvtxDomainHandle_t d) {
  return d ? reinterpret_cast<const std::string*>(d)->c_str() : "(default)";
}

// Domain and registered-string handles point into this list (stable addresses, freed at exit, so
// a leak checker in the process under test sees nothing of ours).
std::deque<std::string> g_names;

const std::string* keep(const char* text) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  return &g_names.emplace_back(text);
}

nvtxDomainHandle_t domain_create(const char* name) {
  return reinterpret_cast<nvtxDomainHandle_t>(const_cast<std::string*>(keep(name)));
}

nvtxStringHandle_t register_string(nvtxDomainHandle_t, const char* text) {
  return reinterpret_cast<nvtxStringHandle_t>(const_cast<std::string*>(keep(text)));
}

int range_push(nvtxDomainHandle_t d, const nvtxEventAttributes_t* a) {
  std::string name = "(unnamed)";
  if (a->messageType == NVTX_MESSAGE_TYPE_REGISTERED && a->message.registered) {
    name = *reinterpret_cast<const std::string*>(a->message.registered);
  } else if (a->messageType == NVTX_MESSAGE_TYPE_ASCII && a->message.ascii) {
    name = a->message.ascii;
  }
  const long long payload = a->payloadType == NVTX_PAYLOAD_TYPE_INT64 ? a->payload.llValue : -1;
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (g_out) {
    std::fprintf(g_out, "push %s %s %lld %lu\n", domain_name(d), name.c_str(), payload,
                 thread_id());
    std::fflush(g_out);
  }
  return 0;
}

int range_pop(nvtxDomainHandle_t d) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (g_out) {
    std::fprintf(g_out, "pop %s %lu\n", domain_name(d), thread_id());
    std::fflush(g_out);
  }
  return 0;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int InitializeInjectionNvtx2(
    NvtxGetExportTableFunc_t get_export_table) {
  const char* path = std::getenv("PB_NVTX_RECORD");
  if (!path) return 0;
  g_out = std::fopen(path, "w");
  if (!g_out) return 0;
  const auto* callbacks =
      static_cast<const NvtxExportTableCallbacks*>(get_export_table(NVTX_ETID_CALLBACKS));
  NvtxFunctionTable table = nullptr;
  unsigned int size = 0;
  if (!callbacks || !callbacks->GetModuleFunctionTable(NVTX_CB_MODULE_CORE2, &table, &size)) {
    return 0;
  }
  auto set = [&](unsigned int id, NvtxFunctionPointer f) {
    if (id < size + 1 && table[id]) *table[id] = f;
  };
  set(NVTX_CBID_CORE2_DomainCreateA, reinterpret_cast<NvtxFunctionPointer>(&domain_create));
  set(NVTX_CBID_CORE2_DomainRegisterStringA,
      reinterpret_cast<NvtxFunctionPointer>(&register_string));
  set(NVTX_CBID_CORE2_DomainRangePushEx, reinterpret_cast<NvtxFunctionPointer>(&range_push));
  set(NVTX_CBID_CORE2_DomainRangePop, reinterpret_cast<NvtxFunctionPointer>(&range_pop));
  return 1;
}
