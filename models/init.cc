// Seeded random streams and PyTorch's default initialisers (see init.h).
#include "models/init.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <numbers>
#include <thread>

namespace ds {

namespace {

// SplitMix64 finaliser: spreads (seed, name hash, chunk) over all 64 bits.
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// FNV-1a, fixed here so stream seeds do not depend on std::hash.
uint64_t hashName(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// Fills values chunk by chunk, chunks spread over the cores; fill(rng, first, last)
// writes one chunk from that chunk's own stream.
void fillChunked(uint64_t seed, const std::string& name, std::vector<float>& values,
                 const std::function<void(InitRng&, float*, float*)>& fill) {
  const int64_t n = static_cast<int64_t>(values.size());
  const int64_t chunks = (n + kInitChunk - 1) / kInitChunk;
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t c = next++; c < chunks; c = next++) {
      InitRng rng(seed, name, static_cast<uint64_t>(c));
      float* first = values.data() + c * kInitChunk;
      fill(rng, first, values.data() + std::min(n, (c + 1) * kInitChunk));
    }
  };
  const int64_t threads =
      std::min<int64_t>(chunks, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::jthread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
}

}  // namespace

InitRng::InitRng(uint64_t seed, const std::string& name, uint64_t chunk)
    : engine_(mix64(mix64(mix64(seed) ^ hashName(name)) + chunk)) {}

double InitRng::uniform01() {
  return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
}

double InitRng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_normal_;
  }
  const double u1 = 1.0 - uniform01();  // (0, 1]: log stays finite
  const double u2 = uniform01();
  const double radius = std::sqrt(-2.0 * std::log(u1));
  const double angle = 2.0 * std::numbers::pi * u2;
  spare_normal_ = radius * std::sin(angle);
  has_spare_ = true;
  return radius * std::cos(angle);
}

std::vector<float> uniformValues(uint64_t seed, const std::string& name, int64_t n, double bound) {
  std::vector<float> values(n);
  fillChunked(seed, name, values, [bound](InitRng& rng, float* first, float* last) {
    for (float* v = first; v != last; ++v) {
      *v = static_cast<float>((2.0 * rng.uniform01() - 1.0) * bound);
    }
  });
  return values;
}

std::vector<float> normalValues(uint64_t seed, const std::string& name, int64_t n, double std) {
  std::vector<float> values(n);
  fillChunked(seed, name, values, [std](InitRng& rng, float* first, float* last) {
    for (float* v = first; v != last; ++v) *v = static_cast<float>(rng.normal() * std);
  });
  return values;
}

std::vector<float> constantValues(int64_t n, float value) {
  return std::vector<float>(n, value);
}

double linearInitBound(int64_t fan_in) {
  return 1.0 / std::sqrt(static_cast<double>(fan_in));
}

double kaimingNormalFanOutStd(int64_t fan_out) {
  return std::sqrt(2.0 / static_cast<double>(fan_out));
}

}  // namespace ds
