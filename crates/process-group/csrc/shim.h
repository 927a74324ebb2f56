// The C boundary between Rust and libtorch's c10d: every function catches every C++
// exception and returns its message as a string the caller frees with pg_free_error
// (NULL on success), so no exception ever crosses into Rust.
#pragma once

#include <cstddef>
#include <cstdint>

namespace at {
class Tensor;
}

extern "C" {

// A connected process group: the rendezvous store and one c10d backend.
struct pg_group;

// How the Gloo transport picks the address it listens on.
enum pg_gloo_device : int32_t {
  // Bind to the address `arg` resolves to (e.g. 127.0.0.1 for loopback worlds).
  PG_GLOO_HOSTNAME = 0,
  // Bind to the network interface named `arg` (GLOO_SOCKET_IFNAME).
  PG_GLOO_INTERFACE = 1,
  // The address this machine's hostname resolves to (loopback when it does not resolve).
  PG_GLOO_DEFAULT = 2,
};

// Rendezvous through a TCPStore at master_addr:master_port (rank 0 hosts it and waits for
// the other ranks), then a ProcessGroupGloo over it. timeout_ms bounds the rendezvous and
// every collective.
char* pg_new_gloo(const char* master_addr, uint16_t master_port, int32_t rank,
                  int32_t world_size, int64_t timeout_ms, int32_t device_kind,
                  const char* device_arg, pg_group** out);

// The same with ProcessGroupNCCL (only when built with the nccl feature).
char* pg_new_nccl(const char* master_addr, uint16_t master_port, int32_t rank,
                  int32_t world_size, int64_t timeout_ms, pg_group** out);

void pg_free(pg_group* group);
void pg_free_error(char* error);

// The sum of the tensor over the ranks, in place. (One tensor per call: c10d reads a list
// as one tensor per local device, summed together.)
char* pg_all_reduce_sum(pg_group* group, at::Tensor* tensor);
// Rank root's values of the tensor, in place.
char* pg_broadcast(pg_group* group, at::Tensor* tensor, int32_t root);
// outputs[r] receives rank r's input (world_size outputs, each shaped like input).
char* pg_all_gather(pg_group* group, at::Tensor** outputs, size_t world_size,
                    at::Tensor* input);
char* pg_barrier(pg_group* group);
}
