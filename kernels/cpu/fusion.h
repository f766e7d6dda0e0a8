// Epilogue fusion in the CPU backend. A bias add, an activation or a normalisation
// after a matrix product or a convolution is a separate step in the plan, and on
// the CPU each such step is one more pass over memory (GPT's bias adds and ResNet's
// ReLUs: bench/RESULTS.md). A kernel that can finish its output with such an op in
// the same pass — a oneDNN post-op, BatchNorm's normalise loop — declares which
// (CpuKernelRegistry::allowEpilogue), and the executor lets it absorb the steps
// right after it that apply those ops to its output alone. The absorbed steps then
// do nothing; the plan, its memory and its results are unchanged.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "kernels/cpu/planned_step.h"

namespace ds::cpu {

// The epilogue rule of an op's kernel on some backend; nullptr: none.
using EpilogueRuleOf = std::function<const EpilogueRule*(const std::string& op)>;

// Fuses in place. Step t joins the epilogue of the step s before it when t
// immediately follows s (or s's last absorbed step), is in the same phase, reads
// s's current output exactly once and as its only unary/binary data input, that
// output has no other reader and is an intermediate (in the arena, not an
// output: nobody reads it after the run), t's output has the same type and layout and overlaps none
// of s's inputs, t runs on s's stream without waiting for an event, and s's
// EpilogueRule (`rule_of`; by default the CPU kernels') accepts t.
void fuseEpilogues(std::vector<PlannedStep>& steps, const std::vector<bool>& intermediate,
                   const EpilogueRuleOf& rule_of = {});

}  // namespace ds::cpu
