// What a pg_group holds, shared by the Gloo and NCCL factories.
#pragma once

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "shim.h"

struct pg_group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

struct pg_work {
  c10::intrusive_ptr<c10d::Work> work;
};

namespace pg_detail {

// A malloc'd copy of msg, for the caller to free with pg_free_error.
inline char* error_string(const std::string& msg) {
  char* out = static_cast<char*>(std::malloc(msg.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, msg.c_str(), msg.size() + 1);
  }
  return out;
}

// Runs body, turning any exception into an error string.
template <typename F>
char* guarded(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const std::exception& e) {
    return error_string(e.what());
  } catch (...) {
    return error_string("unknown C++ exception");
  }
}

// libtorch's TCPStore: rank 0 serves it and waits for all world_size ranks to join.
inline c10::intrusive_ptr<c10d::Store> tcp_store(const char* master_addr, uint16_t port,
                                                 int32_t rank, int32_t world_size,
                                                 std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions opts;
  opts.port = port;
  opts.isServer = rank == 0;
  opts.numWorkers = static_cast<std::size_t>(world_size);
  opts.waitWorkers = true;
  opts.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(std::string(master_addr), opts);
}

}  // namespace pg_detail
