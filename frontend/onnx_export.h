// ONNX export of a trained plan: the model the plan was compiled from, with each
// initializer the plan holds as a parameter or buffer (BatchNorm running
// statistics) replaced by its current value in an executor — what
// `dsrun --export-onnx` writes after training, loadable by ONNX Runtime.
//
// Plan tensors of parameters and buffers keep their ONNX initializer's name (the
// importer names values after ONNX), which is the whole mapping. So that export
// does not need the source file to still exist, dscompile embeds the source model
// in the plan without those initializers' values (they are the tensors' initial
// data already); plans without it fall back to re-reading plan.model.
#pragma once

#include <string>

#include "ir/plan.h"
#include "runtime/executor.h"

namespace ds {

// Embeds `model_path` into the plan (blob + onnx_offset/onnx_bytes), leaving out
// the values of initializers that are plan parameters or buffers.
void embedOnnxModel(const std::string& model_path, PlanFile* plan);

// Fails now, rather than after training, when the plan's source model cannot be had.
void checkOnnxExportable(const PlanFile& plan);

// Writes the source model with every parameter and buffer initializer set to the
// executor's value, atomically (OUT.tmp, then rename). Errors name the initializer
// or the file. Every rank of a multi-rank plan calls it: ZeRO shards are gathered
// into whole weights (runtime/shards.h) and rank 0 writes the file.
void exportOnnx(const Executor& exec, const std::string& out_path);

}  // namespace ds
