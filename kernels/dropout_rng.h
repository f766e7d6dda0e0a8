// The random stream of training-mode Dropout, shared by every backend: a
// counter-based generator (splitmix64 finaliser as the bijective mixer), so the
// mask of element i is a pure function of (run seed, node seed, node, optimizer
// step, micro-step, i). No generator state exists between runs, which is what
// makes a resumed run draw the same masks as an uninterrupted one, and lets a
// GPU kernel compute any element independently (DS_HOST_DEVICE marks the
// functions callable from CUDA device code).
#pragma once

#include <cstdint>
#include <string_view>

#ifdef __CUDACC__
#define DS_HOST_DEVICE __host__ __device__
#else
#define DS_HOST_DEVICE
#endif

namespace ds {

// splitmix64's finaliser: a bijection with full avalanche.
DS_HOST_DEVICE inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Folds one more coordinate into a key; mixing x first keeps nearby values
// (steps 1, 2, 3) from giving related keys.
DS_HOST_DEVICE inline uint64_t mixIn(uint64_t key, uint64_t x) {
  return mix64(key ^ mix64(x + 0x9e3779b97f4a7c15ull));
}

// FNV-1a of the node name: the node's identity in the stream, stable across
// recompilations that do not rename it (unlike a step index).
inline uint64_t nodeHash(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return h;
}

struct DropoutStream {
  uint64_t run_seed;   // dsrun --seed (ExecutorOptions::seed)
  uint64_t node_seed;  // the ONNX node's `seed` attribute (0 when absent)
  uint64_t node;       // nodeHash(node name)
  int64_t step;        // optimizer step (the ds.step feed)
  int64_t micro_step;  // 0 .. gradient_accumulation_steps - 1, on this rank
  // Data parallelism: rank r's micro-step g takes micro-batch g x N + r of the step
  // (runtime/trainer.h), so masks follow that global index and N ranks draw the
  // masks one rank would draw over the same micro-batches.
  int64_t rank = 0;
  int64_t world_size = 1;
};

DS_HOST_DEVICE inline uint64_t dropoutKey(const DropoutStream& s) {
  uint64_t key = mixIn(mixIn(s.run_seed, s.node_seed), s.node);
  const int64_t micro_batch = s.micro_step * s.world_size + s.rank;
  return mixIn(mixIn(key, static_cast<uint64_t>(s.step)), static_cast<uint64_t>(micro_batch));
}

// Element i is kept when the high 32 bits of its draw reach ratio · 2^32.
DS_HOST_DEVICE inline bool dropoutKeep(uint64_t key, uint64_t i, uint64_t threshold) {
  return (mix64(key ^ i) >> 32) >= threshold;
}

}  // namespace ds
