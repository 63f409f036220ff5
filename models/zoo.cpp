#include "models/zoo.h"

#include "models/mlp.h"
#include "models/resnet.h"

namespace pb::models {

void add_model_keys(config::Schema& s) {
  s.add_string("model.name", "resnet", "network: mlp or resnet").one_of({"mlp", "resnet"});
  s.add_string("model.variant", "cifar",
               "resnet style: cifar (depth 6n+2), imagenet (18/34/50/101/152) or wide "
               "(WRN-depth-width_factor)")
      .one_of({"cifar", "imagenet", "wide"});
  s.add_int("model.depth", 20, "resnet depth").at_least(8);
  s.add_int("model.width_factor", 1, "wide resnet width factor k").at_least(1);
  s.add_int_list("model.hidden", std::vector<int64_t>{256, 128}, "mlp hidden layer widths")
      .at_least(1);
  s.add_string("model.activation", "relu", "mlp activation").one_of({"relu", "gelu"});
  s.add_string("model.norm", "batch",
               "normalisation: batch, ghost (batch norm over virtual batches of "
               "virtual_batch_size examples), layer (mlp only) or none")
      .one_of({"batch", "ghost", "layer", "none"});
  s.add_int("model.virtual_batch_size", 64,
            "ghost batch norm: examples per normalisation group (norm = ghost)")
      .at_least(1);
  s.add_float("model.bn_momentum", 0.1, "batch norm running-statistics momentum")
      .greater_than(0)
      .at_most(1);
  s.add_bool("model.zero_init_residual", false,
             "zero-init the last batch norm scale of every residual branch");
  s.add_float("model.dropout", 0.0, "dropout probability (mlp, wide resnet)")
      .at_least(0)
      .less_than(1);
}

std::shared_ptr<nn::Module> build_model(const config::Config& c, const DataShape& data,
                                        Generator& gen) {
  const std::string norm = c.get<std::string>("model.norm");
  if (c.get<std::string>("model.name") == "mlp") {
    MlpConfig m;
    m.in_features = data.channels * data.height * data.width;
    m.num_classes = data.num_classes;
    m.hidden = c.get<std::vector<int64_t>>("model.hidden");
    m.activation = c.get<std::string>("model.activation");
    m.norm = norm == "ghost" ? "batch" : norm;
    m.virtual_batch_size = norm == "ghost" ? c.get<int64_t>("model.virtual_batch_size") : 0;
    m.dropout = c.get<double>("model.dropout");
    return std::make_shared<Mlp>(m, gen);
  }
  if (norm == "layer") {
    throw config::ConfigError(
        "model.norm = \"layer\" is for the mlp; resnets take batch, ghost or none");
  }
  ResNetConfig r;
  r.variant = c.get<std::string>("model.variant");
  r.depth = c.get<int64_t>("model.depth");
  r.width_factor = c.get<int64_t>("model.width_factor");
  r.in_channels = data.channels;
  r.num_classes = data.num_classes;
  r.dropout = c.get<double>("model.dropout");
  r.norm.kind = norm;
  r.norm.virtual_batch_size = c.get<int64_t>("model.virtual_batch_size");
  r.norm.momentum = c.get<double>("model.bn_momentum");
  r.norm.zero_init_residual = c.get<bool>("model.zero_init_residual");
  return std::make_shared<ResNet>(r, gen);
}

}  // namespace pb::models
