// Training-only op schemas: gradient ops, optimizer updates and collectives are
// registered here by later issues; the family exists now so OpRegistry::instance()
// has a stable set of registration functions.
#include "ir/op_registry.h"
#include "ir/ops/ops.h"

namespace ds {

void registerTrainingOps(OpRegistry& /*r*/) {
  // Intentionally empty until the autodiff, optimizer and collective issues land.
}

}  // namespace ds
