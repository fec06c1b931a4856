// control/rpc_stats.cpp — the counting interceptor.
#include "daemon/control/rpc_stats.h"

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"

namespace accum::control {
namespace {

using grpc::experimental::InterceptionHookPoints;

class CountingInterceptor final : public grpc::experimental::Interceptor {
 public:
  CountingInterceptor(RpcStats* stats, std::string method)
      : stats_(stats), method_(std::move(method)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      stats_->record(method_, methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  RpcStats* stats_;
  std::string method_;
};

class CountingInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CountingInterceptorFactory(RpcStats* stats) : stats_(stats) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CountingInterceptor(stats_, rpc_method_label(info->method() ? info->method() : ""));
  }

 private:
  RpcStats* stats_;
};

}  // namespace

std::string rpc_method_label(const std::string& method) {
  // The health service is not in the generated descriptor pool (gRPC encodes it with upb).
  if (method == "/grpc.health.v1.Health/Check" || method == "/grpc.health.v1.Health/Watch") {
    return method;
  }
  const size_t slash = method.rfind('/');
  if (method.empty() || method.front() != '/' || slash == 0) return "unknown";
  const auto* service = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
      method.substr(1, slash - 1));
  if (service == nullptr || service->FindMethodByName(method.substr(slash + 1)) == nullptr) {
    return "unknown";
  }
  return method;
}

void RpcStats::record(const std::string& method, int status_code) {
  std::lock_guard lock(mutex_);
  ++counts_[{method, status_code}];
}

std::map<std::pair<std::string, std::string>, int64_t> RpcStats::counts() const {
  std::lock_guard lock(mutex_);
  std::map<std::pair<std::string, std::string>, int64_t> named;
  for (const auto& [key, count] : counts_)
    named[{key.first, status_code_name(key.second)}] += count;
  return named;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
rpc_stats_interceptor_factory(RpcStats* stats) {
  return std::make_unique<CountingInterceptorFactory>(stats);
}

std::string status_code_name(int code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  if (code >= 0 && code < static_cast<int>(std::size(kNames))) return kNames[code];
  return absl::StrCat("CODE_", code);
}

}  // namespace accum::control
