// Checks of a whole plan that no single rank's steps can show.
#pragma once

#include <string>

#include "ir/plan.h"

namespace ds {

// True for the ops that call the communicator (AllReduce, ReduceScatter, AllGather,
// Broadcast).
bool isCollectiveOp(const std::string& op);

// Proves that every rank issues the same collectives in the same order, each with
// the same op, attributes (world size, root, reduction), dtypes and shapes, and a
// world size equal to the plan's: a plan that passes cannot deadlock on, or exchange
// mismatched data at, a collective. Throws a ds::Error naming the first rank, the
// collective's position and node, and what differs.
void verifyPlanCollectives(const PlanFile& plan);

// Proves the streams are consistent: every step names one of the plan's streams,
// records an event of the plan's range at most once per rank, and waits only on
// events an earlier step on another stream records — so no stream can wait forever.
// Throws a ds::Error naming the rank and step.
void verifyPlanStreams(const PlanFile& plan);

// Proves no step uses bytes another stream may still be using: when a step writes
// a tensor (in an arena or a persistent region) whose bytes an earlier step on
// another stream reads or writes, or reads bytes such a step writes, that step
// happens before it — through stream order and the events steps wait on — in
// optimizer-step runs (every step) and in micro-step runs (those steps only: waits
// on the others' events are skipped). Throws a ds::Error naming the rank and both
// steps.
void verifyPlanMemoryOrder(const PlanFile& plan);

// Proves every step touches memory on its own side: a step on the "host" stream
// (offload's host steps) only host memory, every other step only device memory —
// but a Copy, which reads one side and writes the other, as its "to" says. Throws
// a ds::Error naming the rank, step and tensor.
void verifyPlanPlacement(const PlanFile& plan);

}  // namespace ds
