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

// A collective in flight: pg_work_wait ends it, pg_work_free releases it (after a wait).
struct pg_work;

// Starts summing the tensor over the ranks, in place (one tensor per call: c10d reads a
// list as one tensor per local device, summed together). Several may be in flight at once;
// the backend runs them concurrently (Gloo on its worker threads) in the order started.
char* pg_all_reduce_sum(pg_group* group, at::Tensor* tensor, pg_work** out);
// Starts replacing the tensor with rank root's values, in place.
char* pg_broadcast(pg_group* group, at::Tensor* tensor, int32_t root, pg_work** out);
// Waits until the collective has finished on this rank (its error, if it failed).
char* pg_work_wait(pg_work* work);
void pg_work_free(pg_work* work);
// outputs[r] receives rank r's input (world_size outputs, each shaped like input).
char* pg_all_gather(pg_group* group, at::Tensor** outputs, size_t world_size,
                    at::Tensor* input);
char* pg_barrier(pg_group* group);

// Gradient-ready hooks on a list of parameters (leaf tensors that require grad).
struct pg_grad_hooks;
// Called with the parameter's index once per backward, after its `.grad` holds the sum of
// the gradients that backward produced; on the thread that runs that part of the backward.
typedef void (*pg_grad_ready)(void* context, size_t index);

// Installs ready(context, i) on parameter i's gradient accumulator, for every i < count.
char* pg_grad_hooks_new(at::Tensor** params, size_t count, pg_grad_ready ready,
                        void* context, pg_grad_hooks** out);
// Removes the hooks (after which ready is never called again).
void pg_grad_hooks_free(pg_grad_hooks* hooks);
}
