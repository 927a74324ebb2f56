// Gloo process groups and the collectives of any c10d backend. Only libtorch's own
// exported constructors and methods are called: gloo and GlooStore objects are never built
// here, because Debian's gloo headers are older than the gloo compiled into libtorch.

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <vector>

#include "group.hpp"

using pg_detail::guarded;

namespace {

std::vector<at::Tensor> tensor_list(at::Tensor** tensors, size_t count) {
  std::vector<at::Tensor> list;
  list.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    list.push_back(*tensors[i]);
  }
  return list;
}

}  // namespace

extern "C" {

char* pg_new_gloo(const char* master_addr, uint16_t master_port, int32_t rank,
                  int32_t world_size, int64_t timeout_ms, int32_t device_kind,
                  const char* device_arg, pg_group** out) {
  return guarded([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto store = pg_detail::tcp_store(master_addr, master_port, rank, world_size, timeout);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    switch (device_kind) {
      case PG_GLOO_HOSTNAME:
        options->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForHostname(device_arg));
        break;
      case PG_GLOO_INTERFACE:
        options->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForInterface(device_arg));
        break;
      default:
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size,
                                                               options);
    *out = new pg_group{store, backend, timeout};
  });
}

void pg_free(pg_group* group) {
  try {
    delete group;
  } catch (...) {
    // A destructor that throws while tearing down a broken group: nothing left to do.
  }
}

void pg_free_error(char* error) { std::free(error); }

char* pg_all_reduce_sum(pg_group* group, at::Tensor* tensor, pg_work** out) {
  return guarded([&] {
    std::vector<at::Tensor> list{*tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = group->timeout;
    *out = new pg_work{group->backend->allreduce(list, opts)};
  });
}

char* pg_broadcast(pg_group* group, at::Tensor* tensor, int32_t root, pg_work** out) {
  return guarded([&] {
    std::vector<at::Tensor> list{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = group->timeout;
    *out = new pg_work{group->backend->broadcast(list, opts)};
  });
}

char* pg_work_wait(pg_work* work) {
  return guarded([&] { work->work->wait(); });
}

void pg_work_free(pg_work* work) {
  try {
    delete work;
  } catch (...) {
    // Releasing a failed collective: nothing left to do.
  }
}

char* pg_all_gather(pg_group* group, at::Tensor** outputs, size_t world_size,
                    at::Tensor* input) {
  return guarded([&] {
    std::vector<std::vector<at::Tensor>> out{tensor_list(outputs, world_size)};
    std::vector<at::Tensor> in{*input};
    c10d::AllgatherOptions opts;
    opts.timeout = group->timeout;
    group->backend->allgather(out, in, opts)->wait();
  });
}

char* pg_barrier(pg_group* group) {
  return guarded([&] {
    c10d::BarrierOptions opts;
    opts.timeout = group->timeout;
    group->backend->barrier(opts)->wait();
  });
}
}
