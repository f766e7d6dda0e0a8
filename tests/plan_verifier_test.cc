// The plan verifier: every rank issues the same collectives in the same order with
// the same types, no step writes bytes another stream may still be using, and every
// step touches memory on its own side (host or device); plans that break any are
// rejected at lowering and at load, naming the steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "ir/error.h"
#include "ir/plan_verifier.h"
#include "ir/text.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "tests/test_util.h"

namespace ds {
namespace {

using test::contains;

const char* kGraph = R"(graph collectives {
  input %x : f32[4,3]
  %z = AllReduce(%x) {world_size = 4} : f32[4,3] @sum
  %s = ReduceScatter(%x) {world_size = 4} : f32[1,3] @shard
  %g = AllGather(%s) {world_size = 4} : f32[4,3] @gather
  return %z, %g
})";

PlanFile lowered(int world_size) {
  auto g = parseGraph(kGraph);
  LowerOptions options;
  options.world_size = world_size;
  return lowerToPlan(*g, planMemory(*g), options);
}

std::string verifyError(const PlanFile& plan) {
  try {
    verifyPlanCollectives(plan);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(PlanVerifier, MatchingRanksPass) {
  PlanFile plan = lowered(4);
  EXPECT_EQ(verifyError(plan), "");
  EXPECT_TRUE(isCollectiveOp("AllGather"));
  EXPECT_FALSE(isCollectiveOp("Add"));
}

TEST(PlanVerifier, ReorderedCollectivesAreRejected) {
  PlanFile plan = lowered(4);
  auto* steps = plan.plan.mutable_ranks(2)->mutable_steps();
  auto first = std::find_if(steps->begin(), steps->end(),
                            [](const planpb::Step& s) { return s.node() == "sum"; });
  auto second = std::find_if(steps->begin(), steps->end(),
                             [](const planpb::Step& s) { return s.node() == "shard"; });
  ASSERT_TRUE(first != steps->end() && second != steps->end());
  std::iter_swap(first, second);
  std::string error = verifyError(plan);
  EXPECT_TRUE(contains(error,
                       "rank 2's collective #1 (node 'shard') does not match rank 0's "
                       "(node 'sum')"))
      << error;
}

TEST(PlanVerifier, MissingCollectiveAndWrongWorldSizeAreRejected) {
  PlanFile plan = lowered(4);
  auto* steps = plan.plan.mutable_ranks(3)->mutable_steps();
  steps->erase(std::find_if(steps->begin(), steps->end(),
                            [](const planpb::Step& s) { return s.node() == "gather"; }));
  EXPECT_TRUE(contains(verifyError(plan), "rank 3 issues 2 collectives but rank 0 issues 3"))
      << verifyError(plan);

  // A plan of 2 ranks whose collectives say 4 is also a hang waiting to happen.
  try {
    lowered(2);
    ADD_FAILURE() << "lowering accepted world_size 4 collectives in a 2-rank plan";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "node 'sum' (AllReduce) has world_size 4 but the plan has 2"))
        << e.what();
  }
}

TEST(PlanVerifier, LoadingAMismatchedPlanNamesTheFile) {
  PlanFile plan = lowered(4);
  for (auto& step : *plan.plan.mutable_ranks(1)->mutable_steps())
    if (step.node() == "shard") step.set_outputs(0, step.inputs(0));  // f32[4,3], not f32[1,3]
  std::string path = test::tempPath("mismatched_collectives.plan");
  writePlanFile(path, plan);
  try {
    readPlanFile(path);
    ADD_FAILURE() << "a plan with mismatched collectives loaded";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), path + ": plan: rank 1's collective #2")) << e.what();
  }
}

// Memory reuse across streams: a compute step may write bytes an in-flight
// collective reads only after an event orders it after the collective.
TEST(PlanVerifier, WritingBytesAnotherStreamMayStillReadIsRejected) {
  auto g = parseGraph(R"(graph overlap {
    input %x : f32[64]
    %a = Relu(%x) : f32[64] @first
    %s = AllReduce(%a) {world_size = 2} : f32[64] @sum
    %b = Neg(%x) : f32[64] @other
    %c = Add(%s, %b) : f32[64] @use
    return %c
  })");
  LowerOptions options;
  options.world_size = 2;
  options.overlap_comm = true;
  PlanFile plan = lowerToPlan(*g, planMemory(*g), options);  // verifies
  auto tensor = [&](const std::string& name) {
    for (int i = 0; i < plan.plan.tensors_size(); ++i)
      if (plan.plan.tensors(i).name() == name) return i;
    ADD_FAILURE() << "no tensor " << name;
    return 0;
  };
  // Put 'other''s output on the AllReduce's input, which lowering did not order.
  planpb::TensorInfo* b = plan.plan.mutable_tensors(tensor("b"));
  b->set_offset(plan.plan.tensors(tensor("a")).offset());
  b->set_storage(plan.plan.tensors(tensor("a")).storage());
  try {
    verifyPlanMemoryOrder(plan);
    ADD_FAILURE() << "an unordered write over a collective's input passed";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(),
                         "rank 0 step 'other' (Neg) uses bytes that step 'sum' "
                         "(AllReduce) on stream 'comm' may still be using"))
        << e.what();
  }
  // Waiting for the collective orders the write after it.
  for (int r = 0; r < plan.plan.ranks_size(); ++r) {
    auto* steps = plan.plan.mutable_ranks(r)->mutable_steps();
    int32_t event = -1;
    for (auto& step : *steps) {
      if (step.node() == "sum") {
        if (step.record_event() < 0) {
          step.set_record_event(plan.plan.num_events());
          plan.plan.set_num_events(plan.plan.num_events() + 1);
        }
        event = step.record_event();
      }
      if (step.node() == "other") step.add_wait_events(event);
    }
  }
  EXPECT_NO_THROW(verifyPlanMemoryOrder(plan));
}

// Offload's placement: host steps in host memory, device steps in device memory,
// copies from one to the other as "to" says.
TEST(PlanVerifier, StepsTouchingMemoryOnTheOtherSideAreRejected) {
  auto g = parseGraph(R"(graph offload {
    input %x : f32[8]
    %d = Copy(%x) {to = "host"} : f32[8] @down
    %h = Neg(%d) : f32[8] @negate host
    %u = Copy(%h) {to = "device"} : f32[8] @up
    %y = Relu(%u) : f32[8] @relu
    return %y
  })");
  const PlanFile plan = lowerToPlan(*g, planMemory(*g), LowerOptions{});  // verifies
  auto rejected = [&](const std::string& tensor, planpb::Storage storage) {
    PlanFile bad = plan;
    for (planpb::TensorInfo& t : *bad.plan.mutable_tensors())
      if (t.name() == tensor) t.set_storage(storage);
    try {
      verifyPlanPlacement(bad);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(rejected("h", planpb::HOST_ARENA), "accepted");
  EXPECT_EQ(rejected("h", planpb::ARENA),
            "plan: rank 0 step 'negate' (Neg) writes 'h' in device memory, where a host step "
            "needs host memory (the plan lacks a Copy)");
  EXPECT_TRUE(contains(rejected("d", planpb::ARENA),
                       "step 'down' (Copy) writes 'd' in device memory, where a copy to the host "
                       "needs host memory"));
  EXPECT_TRUE(contains(rejected("u", planpb::HOST_ARENA),
                       "step 'up' (Copy) writes 'u' in host memory, where a copy to the device "
                       "needs device memory"));
  EXPECT_TRUE(contains(rejected("x", planpb::HOST_PERSISTENT),
                       "step 'down' (Copy) reads 'x' in host memory, where a copy to the host "
                       "needs device memory"));
}

}  // namespace
}  // namespace ds
