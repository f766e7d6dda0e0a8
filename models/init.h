// Deterministic PyTorch-style weight initialisation for the model builders.
//
// Every tensor is cut into chunks of kInitChunk elements and each chunk draws from
// its own std::mt19937_64 stream seeded from (model seed, tensor name, chunk), so a
// tensor's values depend only on the seed and its name (not on build order or the
// thread count), and big tensors are generated on all cores. The uniform and normal
// transforms are written out here (not std::*_distribution) so the values are the
// same with every standard library.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace ds {

inline constexpr int64_t kInitChunk = int64_t{1} << 20;

class InitRng {
 public:
  // The stream for chunk `chunk` of tensor `name` of a model built with `seed`.
  InitRng(uint64_t seed, const std::string& name, uint64_t chunk);

  double uniform01();  // in [0, 1), 53 random bits
  double normal();     // standard normal (Box-Muller)

 private:
  std::mt19937_64 engine_;
  double spare_normal_ = 0.0;
  bool has_spare_ = false;
};

// The n values of tensor `name` drawn from U(-bound, bound).
std::vector<float> uniformValues(uint64_t seed, const std::string& name, int64_t n, double bound);
// The n values of tensor `name` drawn from N(0, std^2).
std::vector<float> normalValues(uint64_t seed, const std::string& name, int64_t n, double std);
// n copies of value.
std::vector<float> constantValues(int64_t n, float value);

// nn.Linear / nn.Conv default (kaiming_uniform a=sqrt(5)): weight and bias bound.
double linearInitBound(int64_t fan_in);
// kaiming_normal(mode="fan_out", nonlinearity="relu") std: sqrt(2 / fan_out).
double kaimingNormalFanOutStd(int64_t fan_out);

}  // namespace ds
