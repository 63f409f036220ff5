// Golden-test producer: writes what playbook computes on the CPU for PyTorch to check
// (tests/golden/compare_with_pytorch.py reads these files; tests/golden/README in its docstring).
//
//   pb_golden_dump OUT_DIR
// writes, for each model M of {resnet20, mlp}:
//   M_init.safetensors   the initial state (parameters and buffers, torchvision names), the fixed
//                        batch ("input.x" (N,1,28,28) F32, "input.labels" (N) I32)
//   M_fwdbwd.safetensors one training-mode forward and backward of that batch from the initial
//                        state: "logits" (N,10), "loss" (), "grad.<parameter>" for every
//                        parameter, "buffer.<name>" the running statistics after the forward
//   M_<opt>.safetensors  the parameters after two steps of optimizer <opt> (sgd, momentum,
//                        nesterov, adamw), both with the gradient of the initial point
//   M_relu.safetensors   "relu.<i>": the output of the i-th ReLU of that forward, in execution
//                        order (the stem's, then per block the one after bn1 and the one after
//                        the residual add; the MLP's after each hidden layer), so the comparison
//                        can tell a ReLU that rounding put on the other side of 0 from a bug
// and resnet18_imagenet.safetensors: the ImageNet ResNet-18's initial state, to load into
// torchvision's resnet18, with "input.x" (1,3,64,64) and "logits" of an eval-mode forward.
// ResNet-20 is built with zero_init_residual off so that every branch gets a non-zero gradient.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "models/mlp.h"
#include "models/resnet.h"
#include "runtime/autograd/tape.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/device/cpu.h"
#include "runtime/nn/layers.h"
#include "runtime/ops/ops.h"
#include "runtime/optim/optimizer.h"

namespace {

using namespace pb;
using checkpoint::NamedTensor;

constexpr int64_t kBatch = 16;

// A fixed, smooth-ish batch: x[i] = sin(0.37 i + 0.11 * (i % 7)), labels n % 10.
Tensor fixed_input(const Shape& shape) {
  std::vector<float> v(static_cast<size_t>(shape.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i) + 0.11 * double(i % 7)));
  }
  return from_vector<float>(v, shape);
}

Tensor fixed_labels(int64_t n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<int32_t>(i % 10);
  return from_vector<int32_t>(v, Shape{n});
}

std::unique_ptr<nn::Module> make_model(const std::string& name) {
  Generator gen(0);
  if (name == "mlp") return std::make_unique<models::Mlp>(models::MlpConfig{}, gen);
  models::ResNetConfig c;
  c.depth = 20;
  c.in_channels = 1;
  c.norm.zero_init_residual = false;
  return std::make_unique<models::ResNet>(c, gen);
}

std::vector<NamedTensor> copies(const std::vector<NamedTensor>& named, const std::string& prefix) {
  std::vector<NamedTensor> out;
  for (const auto& [name, t] : named) out.emplace_back(prefix + name, t.detach().clone());
  return out;
}

Tensor loss_of(nn::Module& model, const Tensor& x, const Tensor& labels, Tensor* logits) {
  Tensor out = model(x);
  if (logits) *logits = out.detach().clone();
  return ops::softmax_cross_entropy(out, labels, Tensor{});
}

nn::Module& child(const nn::Module& m, const std::string& name) {
  for (const auto& [n, c] : m.children()) {
    if (n == name) return *c;
  }
  std::fprintf(stderr, "pb_golden_dump: module %s has no child %s\n", m.path().c_str(),
               name.c_str());
  std::exit(1);
}

bool has_child(const nn::Module& m, const std::string& name) {
  for (const auto& [n, c] : m.children()) {
    if (n == name) return true;
  }
  return false;
}

// The model's forward again, submodule by submodule with its own modules and ops, keeping the
// output of every ReLU; returns the logits, which the caller checks bitwise against the model's
// own forward (so this replica cannot drift from models/ unnoticed). Run it on a fresh copy of
// the model: training-mode batch norm updates its running statistics on every call.
Tensor forward_keeping_relus(nn::Module& model, const std::string& name, const Tensor& x,
                             std::vector<Tensor>& relus) {
  autograd::NoGradGuard no_grad;
  const auto keep = [&](const Tensor& t) {
    relus.push_back(t.detach().clone());
    return t;
  };
  if (name == "mlp") {
    Tensor h = x.flatten(1);
    for (const auto& [n, layer] : child(model, "layers").children()) {
      h = (*layer)(h);
      if (dynamic_cast<nn::ReLU*>(layer.get()) != nullptr) keep(h);
    }
    return h;
  }
  Tensor h = keep(child(model, "bn1")(child(model, "conv1")(x)));  // bn1 fuses the stem's ReLU
  for (const char* stage : {"layer1", "layer2", "layer3"}) {
    for (const auto& [n, block] : child(model, stage).children()) {
      const Tensor h1 = keep(child(*block, "bn1")(child(*block, "conv1")(h)));
      const Tensor h2 = child(*block, "bn2")(child(*block, "conv2")(h1));
      const Tensor shortcut = has_child(*block, "downsample") ? child(*block, "downsample")(h) : h;
      h = keep(ops::add_relu(h2, shortcut));
    }
  }
  return child(model, "fc")(ops::global_avg_pool(h));
}

void dump_model(const std::filesystem::path& dir, const std::string& name) {
  const Tensor x = fixed_input(Shape{kBatch, 1, 28, 28});
  const Tensor labels = fixed_labels(kBatch);
  std::unique_ptr<nn::Module> model = make_model(name);
  model->train();
  std::vector<NamedTensor> init = copies(model->state(), "");
  init.emplace_back("input.x", x);
  init.emplace_back("input.labels", labels);
  checkpoint::save(dir / (name + "_init.safetensors"), init);

  Tensor logits;
  Tensor loss = loss_of(*model, x, labels, &logits);
  autograd::backward(loss);
  std::vector<NamedTensor> out{{"logits", logits}, {"loss", loss.detach().clone()}};
  for (const auto& [pname, p] : model->named_parameters()) {
    out.emplace_back("grad." + pname, p.grad().clone());
  }
  for (const NamedTensor& b : copies(model->named_buffers(), "buffer.")) out.push_back(b);
  checkpoint::save(dir / (name + "_fwdbwd.safetensors"), out);

  {
    std::unique_ptr<nn::Module> fresh = make_model(name);
    fresh->train();
    std::vector<Tensor> relus;
    const Tensor replica = forward_keeping_relus(*fresh, name, x, relus);
    const std::vector<float> a = replica.to_vector<float>(), b = logits.to_vector<float>();
    if (a != b) {
      std::fprintf(stderr,
                   "pb_golden_dump: the %s forward replica's logits differ from the model's\n",
                   name.c_str());
      std::exit(1);
    }
    std::vector<NamedTensor> named;
    for (size_t i = 0; i < relus.size(); ++i)
      named.emplace_back("relu." + std::to_string(i), relus[i]);
    checkpoint::save(dir / (name + "_relu.safetensors"), named);
  }

  // Two steps of each optimizer from the initial state; weight decay on every parameter.
  struct Opt {
    const char* name;
    optim::OptimizerConfig config;
  };
  const std::vector<Opt> opts = {
      {"sgd", {"sgd", {{"learning_rate", 0.1}, {"weight_decay", 5e-4}}, {}}},
      {"momentum",
       {"momentum", {{"learning_rate", 0.1}, {"momentum", 0.9}, {"weight_decay", 5e-4}}, {}}},
      {"nesterov",
       {"nesterov", {{"learning_rate", 0.1}, {"momentum", 0.9}, {"weight_decay", 5e-4}}, {}}},
      {"adamw",
       {"adamw", {{"learning_rate", 1e-3}, {"weight_decay", 0.01}, {"epsilon", 1e-8}}, {}}},
  };
  for (const Opt& o : opts) {
    std::unique_ptr<nn::Module> m = make_model(name);
    m->train();
    std::unique_ptr<optim::Optimizer> opt = optim::make_optimizer(o.config, m->named_parameters());
    // Both steps apply the gradient at the initial point: this checks the update rules and
    // their state (momentum buffers, bias corrections at t = 2), not a second forward pass.
    autograd::backward(loss_of(*m, x, labels, nullptr));
    for (int step = 0; step < 2; ++step) opt->step(o.config.hyperparameters.at("learning_rate"));
    checkpoint::save(dir / (name + "_" + o.name + ".safetensors"),
                     copies(m->named_parameters(), ""));
  }
}

void dump_resnet18(const std::filesystem::path& dir) {
  Generator gen(0);
  models::ResNetConfig c;
  c.variant = "imagenet";
  c.depth = 18;
  c.num_classes = 1000;
  models::ResNet net(c, gen);
  net.eval();
  const Tensor x = fixed_input(Shape{1, 3, 64, 64});
  std::vector<NamedTensor> out = copies(net.state(), "");
  out.emplace_back("input.x", x);
  out.emplace_back("logits", net(x).detach().clone());
  checkpoint::save(dir / "resnet18_imagenet.safetensors", out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: pb_golden_dump OUT_DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  // One thread: bitwise reproducible, and quick on a loaded machine (batch 16 gives each
  // parallel region too little work to repay waking a second thread).
  pb::device::set_cpu_blas_threads(1);
  dump_model(dir, "resnet20");
  dump_model(dir, "mlp");
  dump_resnet18(dir);
  return 0;
}
