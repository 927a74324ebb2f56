// Gradient-ready hooks, as PyTorch DDP's reducer installs them: a post hook on each
// parameter's AccumulateGrad node, which runs once per backward after the incoming gradients
// have been summed into `.grad` (however many times the parameter was used). The shim holds
// the accumulator nodes: a variable keeps only a weak reference to its own, and autograd
// would otherwise build a fresh node, without the hook, for the next graph.

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "group.hpp"

using pg_detail::guarded;

struct pg_grad_hooks {
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> keys;
};

extern "C" {

char* pg_grad_hooks_new(at::Tensor** params, size_t count, pg_grad_ready ready,
                        void* context, pg_grad_hooks** out) {
  auto hooks = std::make_unique<pg_grad_hooks>();
  char* error = guarded([&] {
    for (size_t i = 0; i < count; ++i) {
      const at::Tensor& param = *params[i];
      if (!param.defined() || !param.is_leaf() || !param.requires_grad()) {
        throw std::invalid_argument("parameter " + std::to_string(i) +
                                    " is not a leaf tensor that requires grad");
      }
      auto accumulator = torch::autograd::impl::grad_accumulator(param);
      if (!accumulator) {
        throw std::runtime_error("parameter " + std::to_string(i) +
                                 " has no gradient accumulator");
      }
      auto hook = std::make_unique<torch::autograd::utils::LambdaPostHook>(
          [ready, context, i](const torch::autograd::variable_list& outputs,
                              const torch::autograd::variable_list& /*inputs*/) {
            ready(context, i);
            return outputs;
          });
      hooks->keys.push_back(accumulator->add_post_hook(std::move(hook)));
      hooks->accumulators.push_back(std::move(accumulator));
    }
  });
  if (error != nullptr) {
    pg_grad_hooks_free(hooks.release());
    return error;
  }
  *out = hooks.release();
  return nullptr;
}

void pg_grad_hooks_free(pg_grad_hooks* hooks) {
  try {
    for (size_t i = 0; i < hooks->keys.size(); ++i) {
      hooks->accumulators[i]->del_post_hook(hooks->keys[i]);
    }
    delete hooks;
  } catch (...) {
    // Tearing down: nothing left to do.
  }
}
}
