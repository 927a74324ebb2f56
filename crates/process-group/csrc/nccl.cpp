// NCCL process groups (the nccl feature): libtorch's ProcessGroupNCCL over the same
// TCPStore rendezvous; collectives go through the shared code in shim.cpp.

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "group.hpp"

extern "C" {

char* pg_new_nccl(const char* master_addr, uint16_t master_port, int32_t rank,
                  int32_t world_size, int64_t timeout_ms, pg_group** out) {
  return pg_detail::guarded([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto store = pg_detail::tcp_store(master_addr, master_port, rank, world_size, timeout);
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    auto backend =
        c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size, options);
    *out = new pg_group{store, backend, timeout};
  });
}
}
