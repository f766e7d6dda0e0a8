// The cost model's formulas against hand-computed values, the simulator on small
// hand-built plans (two streams, events, accumulation) and the DeepSpeed-style
// memory estimator against its formulas.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "ir/attribute.h"
#include "ir/error.h"
#include "ir/graph.h"
#include "ir/plan.h"
#include "runtime/cost_model.h"
#include "runtime/device_profile.h"
#include "runtime/memory_estimate.h"
#include "runtime/simulator.h"

namespace ds {
namespace {

// A one-rank plan built by hand: tensors, then steps.
class PlanBuilder {
 public:
  PlanBuilder() {
    file_.plan.set_world_size(1);
    file_.plan.add_streams("compute");
    file_.plan.add_ranks()->set_rank(0);
  }
  int tensor(const std::string& name, Shape shape, DType dtype = DType::F32,
             Role role = Role::Activation) {
    planpb::TensorInfo* t = file_.plan.add_tensors();
    t->set_name(name);
    t->set_dtype(static_cast<int>(dtype));
    for (int64_t d : shape) t->add_shape(d);
    t->set_role(static_cast<int>(role));
    return file_.plan.tensors_size() - 1;
  }
  planpb::Step& step(const std::string& op, std::vector<int> inputs, std::vector<int> outputs,
                     const AttributeMap& attrs = {}, int stream = 0) {
    planpb::Step* s = file_.plan.mutable_ranks(0)->add_steps();
    s->set_op(op);
    s->set_node(op + std::to_string(file_.plan.ranks(0).steps_size()));
    s->set_stream(stream);
    s->set_record_event(-1);
    for (int i : inputs) s->add_inputs(i);
    for (int o : outputs) s->add_outputs(o);
    for (const auto& [name, value] : attrs) toPlanAttr(name, value, s->add_attrs());
    return *s;
  }
  PlanFile& file() { return file_; }

 private:
  PlanFile file_;
};

const planpb::Step& lastStep(const PlanFile& f) {
  return f.plan.ranks(0).steps(f.plan.ranks(0).steps_size() - 1);
}

TEST(CostModel, ConvAndItsGradientsCountTwiceTheMultiplyAdds) {
  // X [8,16,32,32], W [32,8,3,3], group 2 -> Y [8,32,30,30]: each output element is
  // Cin/group x kh x kw = 8 x 3 x 3 = 72 multiply-adds.
  PlanBuilder b;
  const int x = b.tensor("x", {8, 16, 32, 32}), w = b.tensor("w", {32, 8, 3, 3});
  const int y = b.tensor("y", {8, 32, 30, 30});
  b.step("Conv", {x, w}, {y}, {{"group", int64_t{2}}});
  const double forward = 2.0 * 8 * 32 * 30 * 30 * 8 * 3 * 3;
  EXPECT_DOUBLE_EQ(stepFlops(b.file(), lastStep(b.file())), forward);
  EXPECT_EQ(stepBytes(b.file(), lastStep(b.file())),
            4 * (8 * 16 * 32 * 32 + 32 * 8 * 3 * 3 + 8 * 32 * 30 * 30));
  const int dx = b.tensor("dx", {8, 16, 32, 32}), dw = b.tensor("dw", {32, 8, 3, 3});
  b.step("ConvGradInput", {y, w}, {dx}, {{"group", int64_t{2}}});
  EXPECT_DOUBLE_EQ(stepFlops(b.file(), lastStep(b.file())), forward);
  b.step("ConvGradWeight", {y, x}, {dw}, {{"group", int64_t{2}}});
  EXPECT_DOUBLE_EQ(stepFlops(b.file(), lastStep(b.file())), forward);
}

TEST(CostModel, MatMulIsTwoMnkPerBatch) {
  PlanBuilder b;
  const int a = b.tensor("a", {4, 64, 128}), w = b.tensor("w", {4, 128, 32});
  const int y = b.tensor("y", {4, 64, 32});
  b.step("MatMul", {a, w}, {y});
  EXPECT_DOUBLE_EQ(stepFlops(b.file(), lastStep(b.file())), 2.0 * 4 * 64 * 32 * 128);
  const int at = b.tensor("at", {4, 128, 64});  // transA: K is the second-last dim
  b.step("MatMul", {at, w}, {y}, {{"transA", int64_t{1}}});
  EXPECT_DOUBLE_EQ(stepFlops(b.file(), lastStep(b.file())), 2.0 * 4 * 64 * 32 * 128);
}

TEST(CostModel, GemmIsTwoMnk) {
  PlanBuilder b;
  const int a = b.tensor("a", {128, 256}), w = b.tensor("w", {512, 256}), c = b.tensor("c", {512});
  const int y = b.tensor("y", {128, 512});
  b.step("Gemm", {a, w, c}, {y}, {{"transB", int64_t{1}}});
  EXPECT_DOUBLE_EQ(stepFlops(b.file(), lastStep(b.file())), 2.0 * 128 * 512 * 256);
}

TEST(CostModel, ElementwiseReductionAndOptimizerCounts) {
  PlanBuilder b;
  const int x = b.tensor("x", {10, 20}), y = b.tensor("y", {10, 20}), s = b.tensor("s", {10});
  b.step("Relu", {x}, {y});
  EXPECT_DOUBLE_EQ(stepFlops(b.file(), lastStep(b.file())), 200);
  b.step("ReduceSum", {x}, {s}, {{"axes", std::vector<int64_t>{1}}});
  EXPECT_DOUBLE_EQ(stepFlops(b.file(), lastStep(b.file())), 200);
  b.step("Reshape", {x}, {y});
  EXPECT_DOUBLE_EQ(stepFlops(b.file(), lastStep(b.file())), 0);
  const int lr = b.tensor("lr", {}), step = b.tensor("step", {}, DType::I64);
  b.step("AdamStep", {x, y, lr, step, x, x}, {x, x, x});
  EXPECT_DOUBLE_EQ(stepFlops(b.file(), lastStep(b.file())), 12 * 200);
}

TEST(CostModel, KernelTimeIsLaunchPlusRoofline) {
  const DeviceProfile d = h100Sxm();
  PlanBuilder b;
  // A big f32 MatMul is compute-bound at the fp32 peak; in f16 at the tensor-core peak.
  const int a = b.tensor("a", {4096, 4096}), y = b.tensor("y", {4096, 4096});
  b.step("MatMul", {a, a}, {y});
  const double flops = 2.0 * 4096 * 4096 * 4096;
  EXPECT_DOUBLE_EQ(stepCost(b.file(), lastStep(b.file()), d).seconds,
                   d.launch_seconds + flops / d.fp32_flops);
  const int h = b.tensor("h", {4096, 4096}, DType::F16),
            hy = b.tensor("hy", {4096, 4096}, DType::F16);
  b.step("MatMul", {h, h}, {hy});
  const double bytes = 3.0 * 4096 * 4096 * 2;
  EXPECT_DOUBLE_EQ(stepCost(b.file(), lastStep(b.file()), d).seconds,
                   d.launch_seconds + std::max(flops / d.fp16_flops, bytes / d.hbm_bytes_per_s));
  // Relu is memory-bound: 8 bytes per element at HBM bandwidth.
  b.step("Relu", {a}, {y});
  EXPECT_DOUBLE_EQ(stepCost(b.file(), lastStep(b.file()), d).seconds,
                   d.launch_seconds + 8.0 * 4096 * 4096 / d.hbm_bytes_per_s);
}

// Optimizer offload: the update on the host stream runs at the host's share of
// memory bandwidth (or its cores' f64 rate), and copies cross PCIe once.
TEST(CostModel, OffloadStepsRunOnTheHostAndCopiesCrossPcie) {
  const DeviceProfile d = h100Sxm();
  PlanBuilder b;
  b.file().plan.add_streams("host");
  b.file().plan.add_streams("copy");
  const int64_t n = 1 << 22;
  const int p = b.tensor("p", {n}), g = b.tensor("g", {n}, DType::F16), m = b.tensor("m", {n});
  const int v = b.tensor("v", {n}), r = b.tensor("r", {n}, DType::F16);
  const int lr = b.tensor("lr", {}), step = b.tensor("step", {}, DType::I64);
  b.step("AdamStep", {p, g, lr, step, m, v}, {p, m, v, r}, {{"round_to", std::string("f16")}}, 1);
  // p, m, v read and written, g read and r written, the scalars.
  const double bytes = n * (3 * 4 * 2 + 2 + 2) + 4 + 8;
  EXPECT_DOUBLE_EQ(
      stepCost(b.file(), lastStep(b.file()), d).seconds,
      d.host_step_seconds + std::max(12.0 * n / d.host_flops, bytes / d.host_bytes_per_s));
  EXPECT_GT(stepCost(b.file(), lastStep(b.file()), d).seconds, 10 * (bytes / d.hbm_bytes_per_s))
      << "the host is slower than HBM";
  b.step("Copy", {g}, {b.tensor("g_host", {n}, DType::F16)}, {{"to", std::string("host")}}, 2);
  EXPECT_DOUBLE_EQ(stepCost(b.file(), lastStep(b.file()), d).seconds,
                   d.launch_seconds + 2.0 * n / d.pcie_bytes_per_s);
}

// A 16-bit product whose rows are not 16-byte aligned (an odd vocabulary) gets an
// eighth of the tensor-core peak; f32 products and aligned ones are unaffected.
TEST(CostModel, UnalignedSixteenBitProductsRunAtAnEighthOfThePeak) {
  const DeviceProfile d = h100Sxm();
  PlanBuilder b;
  const int x = b.tensor("x", {8192, 768}, DType::BF16);
  const int w = b.tensor("w", {768, 50257}, DType::BF16),
            y = b.tensor("y", {8192, 50257}, DType::BF16);
  b.step("MatMul", {x, w}, {y});
  const double flops = 2.0 * 8192 * 768 * 50257;
  EXPECT_DOUBLE_EQ(stepCost(b.file(), lastStep(b.file()), d).seconds,
                   d.launch_seconds + flops / (d.fp16_flops / 8));
  const int wp = b.tensor("wp", {768, 50304}, DType::BF16),
            yp = b.tensor("yp", {8192, 50304}, DType::BF16);
  b.step("MatMul", {x, wp}, {yp});
  EXPECT_DOUBLE_EQ(stepCost(b.file(), lastStep(b.file()), d).seconds,
                   d.launch_seconds + 2.0 * 8192 * 768 * 50304 / d.fp16_flops);
  const int xf = b.tensor("xf", {8192, 768}), wf = b.tensor("wf", {768, 50257}),
            yf = b.tensor("yf", {8192, 50257});
  b.step("MatMul", {xf, wf}, {yf});
  EXPECT_DOUBLE_EQ(stepCost(b.file(), lastStep(b.file()), d).seconds,
                   d.launch_seconds + flops / d.fp32_flops);
}

// A Reshape the memory plan put on its input's bytes launches nothing; one that
// copies is a memory-bound kernel like any other.
TEST(CostModel, InPlaceReshapeIsFree) {
  const DeviceProfile d = h100Sxm();
  PlanBuilder b;
  const int x = b.tensor("x", {64, 1024}), y = b.tensor("y", {1024, 64});
  b.file().plan.mutable_tensors(x)->set_offset(4096);
  b.file().plan.mutable_tensors(y)->set_offset(4096);
  b.step("Reshape", {x}, {y}, {{"shape", Shape{1024, 64}}});
  const StepCost in_place = stepCost(b.file(), lastStep(b.file()), d);
  EXPECT_EQ(in_place.seconds, 0.0);
  EXPECT_EQ(in_place.bytes, 0);
  const int z = b.tensor("z", {1024, 64});
  b.file().plan.mutable_tensors(z)->set_offset(4096 + 64 * 1024 * 4);
  b.step("Reshape", {x}, {z}, {{"shape", Shape{1024, 64}}});
  EXPECT_DOUBLE_EQ(stepCost(b.file(), lastStep(b.file()), d).seconds,
                   d.launch_seconds + 2.0 * 4 * 64 * 1024 / d.hbm_bytes_per_s);
}

TEST(CostModel, CollectivesFollowTheRingModel) {
  const DeviceProfile d = h100Sxm();
  const double bytes = 100e6;
  // 8 ranks fit a node: NVLink.
  EXPECT_DOUBLE_EQ(collectiveSeconds("AllReduce", 100'000'000, 8, d),
                   2.0 * 7 / 8 * bytes / 450e9 + 2 * 7 * 3e-6);
  EXPECT_DOUBLE_EQ(collectiveSeconds("AllGather", 100'000'000, 8, d),
                   7.0 / 8 * bytes / 450e9 + 7 * 3e-6);
  // 16 ranks span two nodes: the network.
  EXPECT_DOUBLE_EQ(collectiveSeconds("ReduceScatter", 100'000'000, 16, d),
                   15.0 / 16 * bytes / 50e9 + 15 * 10e-6);
  EXPECT_DOUBLE_EQ(collectiveSeconds("Broadcast", 100'000'000, 4, d), bytes / 450e9 + 2 * 3e-6);
  EXPECT_EQ(collectiveSeconds("AllReduce", 100'000'000, 1, d), 0);

  // In a plan: AllGather's buffer is its output, world_size from the attribute.
  PlanBuilder b;
  const int shard = b.tensor("shard", {1000}), whole = b.tensor("whole", {8000});
  b.step("AllGather", {shard}, {whole}, {{"world_size", int64_t{8}}});
  const StepCost c = stepCost(b.file(), lastStep(b.file()), d);
  EXPECT_EQ(c.comm_bytes, 32000);
  EXPECT_EQ(c.world_size, 8);
  EXPECT_DOUBLE_EQ(c.seconds, collectiveSeconds("AllGather", 32000, 8, d));
}

// producer (stream 0, records event 0) -> collective on stream 1 (waits on event
// 0), and an independent compute step on stream 0 that waits on event 1 (recorded
// by the collective) only when `wait_for_comm`.
PlanFile twoStreamPlan(bool wait_for_comm) {
  PlanBuilder b;
  b.file().plan.add_streams("comm");
  const int x = b.tensor("x", {1024, 1024}), g = b.tensor("g", {1024, 1024});
  const int y = b.tensor("y", {1024, 1024}), z = b.tensor("z", {1024, 1024});
  const int sum = b.tensor("sum", {1024, 1024});
  b.step("MatMul", {x, x}, {g}).set_record_event(0);
  planpb::Step& comm = b.step("AllReduce", {g}, {sum}, {{"world_size", int64_t{8}}}, 1);
  comm.add_wait_events(0);
  comm.set_record_event(1);
  planpb::Step& other = b.step("MatMul", {x, y}, {z});
  if (wait_for_comm) other.add_wait_events(1);
  return std::move(b.file());
}

TEST(Simulator, CollectiveOnItsOwnStreamOverlapsCompute) {
  const DeviceProfile d = h100Sxm();
  const PlanFile plan = twoStreamPlan(false);
  const Simulation sim = simulate(plan, 0, d);
  const double produce = sim.costs[0].seconds, comm = sim.costs[1].seconds;
  const double other = sim.costs[2].seconds;
  ASSERT_GT(comm, 0);
  EXPECT_DOUBLE_EQ(sim.timeline[1].start, produce) << "the collective waits for its input";
  EXPECT_DOUBLE_EQ(sim.timeline[2].start, produce) << "compute does not wait for the collective";
  EXPECT_DOUBLE_EQ(sim.step_seconds, produce + std::max(comm, other));
  EXPECT_LT(sim.step_seconds, produce + comm + other);
  EXPECT_DOUBLE_EQ(sim.stream_busy_seconds[0], produce + other);
  EXPECT_DOUBLE_EQ(sim.stream_busy_seconds[1], comm);
  EXPECT_DOUBLE_EQ(sim.collective_seconds, comm);
  EXPECT_NEAR(sim.exposed_comm_seconds, std::max(0.0, comm - other), 1e-15);
}

TEST(Simulator, ComputeWaitingOnTheCollectiveExposesIt) {
  const DeviceProfile d = h100Sxm();
  const Simulation sim = simulate(twoStreamPlan(true), 0, d);
  const double produce = sim.costs[0].seconds, comm = sim.costs[1].seconds;
  const double other = sim.costs[2].seconds;
  EXPECT_DOUBLE_EQ(sim.timeline[2].start, produce + comm);
  EXPECT_DOUBLE_EQ(sim.step_seconds, produce + comm + other);
  EXPECT_NEAR(sim.exposed_comm_seconds, comm, 1e-15);
  EXPECT_NEAR(sim.overlappedCommSeconds(), 0, 1e-15);
}

TEST(Simulator, MicroStepsRepeatAndTheOptimizerStepRunsOnce) {
  PlanBuilder b;
  b.file().plan.set_config_json(R"({"gradient_accumulation_steps": 3})");
  const int x = b.tensor("x", {256, 256}), y = b.tensor("y", {256, 256});
  b.step("MatMul", {x, x}, {y});
  b.step("Relu", {y}, {x}).set_phase(planpb::OPTIMIZER_STEP);
  const Simulation sim = simulate(b.file(), 0, h100Sxm());
  EXPECT_EQ(sim.accumulation, 3);
  EXPECT_TRUE(sim.training);
  ASSERT_EQ(sim.timeline.size(), 4u);
  EXPECT_EQ(sim.timeline[2].micro_step, 2);
  EXPECT_EQ(sim.timeline[3].step, 1);
  EXPECT_DOUBLE_EQ(sim.step_seconds, 3 * sim.costs[0].seconds + sim.costs[1].seconds);
  EXPECT_EQ(sim.exposed_comm_seconds, 0);
}

TEST(Simulator, RejectsAStepOnAStreamThePlanLacks) {
  PlanBuilder b;
  const int x = b.tensor("x", {4});
  b.step("Relu", {x}, {x}, {}, 3);
  EXPECT_THROW(simulate(b.file(), 0, h100Sxm()), Error);
}

// DeepSpeed's formulas for 1e9 parameters, the largest layer 1e8, 8 GPUs on one node.
TEST(MemoryEstimate, FollowsDeepSpeedsFormulas) {
  EstimateSetup s;
  s.model = {1'000'000'000, 100'000'000};
  s.world_size = 8;
  s.gpus_per_node = 8;
  s.mixed_precision = true;
  std::map<std::string, MemoryEstimate> by;
  for (const MemoryEstimate& e : estimateModelStateMemory(s))
    by[std::to_string(e.stage) + offloadName(e.offload) + std::to_string(e.zero_init)] = e;
  ASSERT_EQ(by.size(), 11u);
  EXPECT_DOUBLE_EQ(by["2none-1"].gpu_bytes, 4e9 + 16e9 / 8);
  EXPECT_DOUBLE_EQ(by["2none-1"].host_bytes, 1e9 * 4 * 8 * 1.5);
  EXPECT_DOUBLE_EQ(by["2optimizer-1"].gpu_bytes, 2e9);
  EXPECT_DOUBLE_EQ(by["2optimizer-1"].host_bytes, 1e9 * 32 * 1.5);
  EXPECT_DOUBLE_EQ(by["0none-1"].gpu_bytes, 4e9 + 16e9);
  EXPECT_DOUBLE_EQ(by["3none1"].gpu_bytes, 4e8 + 18e9 / 8);
  EXPECT_DOUBLE_EQ(by["3none1"].host_bytes, 1e8 * 4 * 8 * 1.5);
  EXPECT_DOUBLE_EQ(by["3none0"].host_bytes, 1e9 * 4 * 8 * 1.5);
  EXPECT_DOUBLE_EQ(by["3optimizer1"].gpu_bytes, 4e8 + 2e9 / 8);
  EXPECT_DOUBLE_EQ(by["3optimizer1"].host_bytes, 1e9 * 16 * 1.5);
  EXPECT_DOUBLE_EQ(by["3optimizer+params1"].gpu_bytes, 4e8);
  EXPECT_DOUBLE_EQ(by["3optimizer+params1"].host_bytes, 1e9 * 18 * 1.5);
  EXPECT_DOUBLE_EQ(by["3optimizer+params0"].host_bytes, 1e9 * 32 * 1.5);  // max(4 x 8, 18)
  // fp32: 4-byte parameters and gradients, 12 bytes on the optimizer's side.
  s.mixed_precision = false;
  EXPECT_DOUBLE_EQ(estimateModelStateMemory(s)[5].gpu_bytes, 2 * 4e8 + 16e9 / 8);  // 3 none
}

TEST(MemoryEstimate, CountsWholeParametersOfShards) {
  PlanBuilder b;
  b.tensor("fc.weight", {6, 8}, DType::F32, Role::Parameter);
  b.tensor("fc.bias", {6}, DType::F32, Role::Parameter);
  b.tensor("x", {100, 100});  // not a parameter
  const int shard = b.tensor("zero/bucket0.params", {40}, DType::F32, Role::Parameter);
  planpb::ShardLayout* layout = b.file().plan.mutable_tensors(shard)->mutable_shard();
  layout->set_world_size(2);
  for (auto [name, rows] : {std::pair{"out.weight", 8}, std::pair{"out.bias", 1}}) {
    planpb::ShardPiece* p = layout->add_pieces();
    p->set_name(name);
    p->add_shape(rows);
    p->add_shape(8);
  }
  const ModelSize size = modelSizeOf(b.file());
  EXPECT_EQ(size.params, 48 + 6 + 64 + 8);
  EXPECT_EQ(size.largest_layer_params, 72);  // out: 64 + 8
}

}  // namespace
}  // namespace ds
