// The text form of the IR. It prints and parses back, so tests can state graphs
// as text and dumps can be diffed. Example:
//
//   graph mlp {
//     input %x : f32[8,4]
//     param %w : f32[4,2]
//     const %shape : i64[2] = [8, 2]
//     %y = MatMul(%x, %w) : f32[8,2] @fc
//     %z = Reshape(%y) {shape = [8, 2]} : f32[8,2] @reshape
//     return %z
//   }
//
// State updates are `update %state = %next` lines before `return`.
// Sources are `ROLE %name : TYPE [= [values...] | = <elided>]`; a node is
// `%out, ... = Op(%in | none, ...) {attrs} : [ROLE] TYPE, ... @node_name`, the role
// written only when it is not "activation"; a node that runs once per optimizer step
// rather than every micro-step ends in `optimizer_step`, one that runs on the host
// CPU (optimizer offload) in `host`. Names outside [A-Za-z0-9_.-/]
// are quoted.
// Attribute values: 3, 0.5, "str", [1, 2], [0.5], ["a"], ints[], floats[], strings[],
// tensor<f32[2]>[1.0, 2.0].
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "ir/graph.h"

namespace ds {

struct PrintOptions {
  // Source data with more elements than this prints as <elided>.
  int64_t max_data_elements = 64;
  // Print the data of parameters and buffers too (constants are always printed).
  bool print_weights = false;
};

std::string printGraph(const Graph& graph, const PrintOptions& options = {});
// Throws ds::Error "line L:C: message" on malformed text. Does not run shape inference:
// types are as written; run verifyGraph to check them.
std::unique_ptr<Graph> parseGraph(std::string_view text);

}  // namespace ds
